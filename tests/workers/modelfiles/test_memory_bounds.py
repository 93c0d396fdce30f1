"""Hostile files cost bounded memory: zip entries are capped before and while inflating, the scan's
memo, stack and findings are bounded, and the restricted reader counts what it builds."""
import io
import json
import subprocess
import sys
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest

from tests.workers.modelfiles import hostile
from workers.modelfiles import pickle_scan, restricted_pickle
from workers.modelfiles.pickle_scan import Memo, PickleLimitError, PickleStreamError, scan_path, scan_pickle_bytes
from workers.modelfiles.torch_reader import iter_torch_tensors
from workers.modelfiles.types import ModelFileError

ROOT = Path(__file__).resolve().parents[3]
ADDRESS_SPACE = 600 << 20
_CHILD = """
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
sys.path.insert(0, {root!r})
from pathlib import Path
from workers.modelfiles.analyse import analyse_path
result = analyse_path(Path(sys.argv[1]))
print(json.dumps({{"verdict": result.verdict, "findings": result.findings, "error": result.error}}))
"""


@pytest.mark.parametrize("name", ["zip_bomb", "zip_bomb_lying_header"])
def test_a_zip_bomb_ends_in_a_clean_verdict_within_600_mb_of_address_space(tmp_path, name):
    path = hostile.HOSTILE[name][0](tmp_path / f"{name}.pt", tmp_path / "CANARY")
    assert path.stat().st_size < 5 << 20
    child = subprocess.run([sys.executable, "-c", _CHILD.format(limit=ADDRESS_SPACE, root=str(ROOT)), str(path)],
                           capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr[-2000:]  # no MemoryError, no kill
    result = json.loads(child.stdout)
    assert result["verdict"] == "dangerous"
    assert any(f["what"] == "zip entry too large to inflate" for f in result["findings"])
    assert not (tmp_path / "CANARY").exists()


def test_a_declared_size_past_the_cap_is_refused_before_inflating(tmp_path, monkeypatch):
    path = hostile.zip_bomb(tmp_path / "bomb.pt", tmp_path / "CANARY")
    limits = []
    real = pickle_scan.read_zip_entry
    monkeypatch.setattr(pickle_scan, "read_zip_entry", lambda *a, limit, **k: limits.append(limit) or real(*a, limit=limit, **k))
    assert scan_path(path).verdict == "dangerous"
    assert max(limits) <= 4096  # only the entry's head was looked at


def test_a_compressed_numeric_npz_is_scanned_by_its_header_only(tmp_path, monkeypatch):
    monkeypatch.setattr(pickle_scan, "MAX_INFLATE", 1 << 20)
    np.savez_compressed(tmp_path / "big.npz", a=np.zeros(1 << 20, dtype="<f4"))  # 4 MiB inflated
    report = scan_path(tmp_path / "big.npz")
    assert report.verdict == "safe", report.findings


def test_an_npz_array_inflating_past_its_declared_size_is_refused(tmp_path):
    buf = io.BytesIO()
    np.save(buf, np.zeros(1 << 22, dtype="<f4"))  # 16 MiB
    raw = buf.getvalue()
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    deflated = c.compress(raw) + c.flush()
    path = hostile.raw_zip(tmp_path / "lie.npz", [("a.npy", deflated, 8, zlib.crc32(raw), 4096)])
    assert scan_path(path).verdict == "safe"  # a numeric array: nothing to run
    with pytest.raises(ModelFileError, match="inflates to a size other than the 4096 bytes its header declares"):
        list(iter_torch_tensors(path))


# --- the scan's own memory -------------------------------------------------------------------

def _peak_traced(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_global_named_50000_times_costs_one_finding_not_50000():
    data = hostile.pickle_of(b"cos\nsystem\n0" * 50_000 + b"N")
    findings = []
    assert _peak_traced(lambda: findings.extend(scan_pickle_bytes(data, where="p"))) < 8 << 20  # was 17 MB
    assert [f.what for f in findings] == ["os.system"]


def test_many_different_dangerous_globals_are_capped_but_stay_dangerous(tmp_path):
    path = tmp_path / "many.pkl"
    path.write_bytes(hostile.pickle_of(b"".join(b"cos\nf%d\n0" % n for n in range(5000)) + b"N"))
    report = scan_path(path)
    assert report.verdict == "dangerous"
    assert len(report.findings) <= pickle_scan.MAX_FINDINGS + 1
    assert report.findings[-1].what == "too many findings"


def test_memo_entries_cost_a_list_slot_not_a_dict_entry():
    data = hostile.pickle_of(b"N\x940" * 200_000 + b"N", protocol=4)
    assert _peak_traced(lambda: scan_pickle_bytes(data, where="p")) < 8 << 20  # a dict: 21 MB


def test_memo_keys_far_past_the_cap_are_bounded_too():
    memo = Memo()
    for key in range(Memo.MAX_FAR):
        memo.put(pickle_scan.MAX_MEMO + key, None, 0)
    with pytest.raises(PickleLimitError):
        memo.put(2 * pickle_scan.MAX_MEMO + 10**9, None, 0)
    with pytest.raises(PickleStreamError, match="negative"):
        memo.put(-1, None, 0)


def test_marks_nested_past_the_cap_are_not_analysed_and_so_dangerous():
    data = hostile.pickle_of(b"(" * (pickle_scan.MAX_MARK_DEPTH + 1) + b"N")
    report_what = {f.what: f.why for f in scan_pickle_bytes(data, where="p")}
    assert "MARKs nested too deep" in report_what["pickle too large to analyse"]


def test_a_stack_past_the_cap_is_not_analysed_and_so_dangerous(monkeypatch):
    monkeypatch.setattr(pickle_scan, "MAX_STACK", 1000)
    data = hostile.pickle_of(b"N" * 70_000)
    assert "pickle too large to analyse" in {f.what for f in scan_pickle_bytes(data, where="p")}


def test_the_restricted_reader_counts_the_values_it_builds(monkeypatch):
    monkeypatch.setattr(restricted_pickle, "MAX_VALUES", 1000)
    data = hostile.pickle_of(b"(" + b"]" * 2000 + b"l")
    with pytest.raises(ModelFileError, match="more than 1000 values"):
        restricted_pickle.load_restricted(data)
