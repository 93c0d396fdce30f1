import io
import pickle
import pickletools
import struct
import zipfile

import numpy as np
import pytest
import torch

from tests.workers.modelfiles import hostile
from workers.modelfiles.pickle_scan import (
    SAFE_GLOBALS, PickleStreamError, classify_global, iter_ops, scan_path, scan_pickle_bytes,
)
from workers.modelfiles.sniff import sniff
from workers.modelfiles.torch_reader import iter_torch_tensors
from workers.modelfiles.types import ModelFileError


def _globals_by_pickletools(data: bytes) -> set[str]:
    """Independent reference: GLOBAL opcodes as the stdlib disassembler decodes them."""
    return {arg.replace(" ", ".") for op, arg, _ in pickletools.genops(data) if op.name == "GLOBAL"}


# --- every hostile class ----------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(hostile.HOSTILE))
def test_hostile_file_gets_its_verdict_and_never_runs(tmp_path, name):
    build, expected = hostile.HOSTILE[name]
    canary = tmp_path / "CANARY"
    path = build(tmp_path / f"{name}.pt", canary)

    report = scan_path(path)
    assert report.verdict == expected, report.findings
    assert any(f.severity == expected for f in report.findings)
    with pytest.raises(ModelFileError):
        list(iter_torch_tensors(path))
    assert not canary.exists()


@pytest.mark.parametrize("name", sorted(hostile.GADGETS))
def test_each_gadget_is_named_in_a_dangerous_finding(tmp_path, name):
    path = hostile.HOSTILE[f"gadget_{name}"][0](tmp_path / "g.pkl", tmp_path / "CANARY")
    source = path.read_bytes()
    referenced = _globals_by_pickletools(source)
    report = scan_path(path)
    assert set(report.globals_seen) == referenced
    dangerous = {f.what for f in report.findings if f.severity == "dangerous"}
    assert dangerous & referenced, report.findings


def test_stack_global_operands_are_resolved_through_the_memo_not_the_decoys(tmp_path):
    path = hostile.stack_global_memo_decoys(tmp_path / "d.pkl", tmp_path / "CANARY")
    report = scan_path(path)
    assert report.globals_seen == ("os.system",)
    finding = next(f for f in report.findings if f.what == "os.system")
    offset = int(finding.where.rsplit("@", 1)[1])
    assert path.read_bytes()[offset] == 0x93  # the STACK_GLOBAL opcode itself


def test_finding_names_zip_entry_and_offset(tmp_path):
    path = hostile.zip_hidden_pickle(tmp_path / "z.pt", tmp_path / "CANARY")
    report = scan_path(path)
    finding = next(f for f in report.findings if f.what == "os.system")
    assert finding.where == "archive/data/1@2"


def test_deflated_data_pkl_is_inflated_and_scanned(tmp_path):
    path = tmp_path / "deflated.pt"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data.pkl", hostile.os_system(tmp_path / "CANARY"))
    assert scan_path(path).verdict == "dangerous"


def test_same_zip_without_the_trick_is_safe(tmp_path):
    path = hostile.torch_zip(tmp_path / "ok.pt", hostile.benign_zip_entries())
    report = scan_path(path)
    assert report.verdict == "safe", report.findings
    assert report.findings == ()


def test_crc_mismatch_on_a_benign_pickle_is_suspicious(tmp_path):
    path = hostile.torch_zip(tmp_path / "crc.pt", hostile.benign_zip_entries())
    hostile._corrupt_first_crc(path)
    report = scan_path(path)
    assert report.verdict == "suspicious"
    assert [f.what for f in report.findings] == ["zip CRC mismatch"]


def test_memo_index_alone_is_reported(tmp_path):
    path = tmp_path / "memo.pkl"
    path.write_bytes(hostile.pickle_of(b"}" + b"r" + struct.pack("<I", 0xFFFFFFF0)))
    report = scan_path(path)
    assert report.verdict == "dangerous"
    assert report.findings[0].what.startswith("memo index")


def test_safetensors_pickle_polyglot_is_dangerous(tmp_path):
    # BINBYTES swallows the 8-byte length's zero bytes and the '{'; the pickle then runs.
    payload = b"0" + hostile.call(hostile.glob("os", "system"), hostile.s(hostile.shell(tmp_path / "C"))) + b"."
    head = b"B\x05\x00\x00\x00" + b"\x00\x00\x00" + b"{\x00" + payload
    header_len = struct.unpack("<Q", head[:8])[0]
    path = tmp_path / "poly.safetensors"
    path.write_bytes(head + b" " * (8 + header_len - len(head)) + b"\x00" * 16)
    assert sniff(path) == "safetensors"
    report = scan_path(path)
    assert report.verdict == "dangerous"
    assert any("polyglot" in f.why for f in report.findings)


def test_real_safetensors_and_gguf_are_safe_without_findings(tmp_path):
    header = b'{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}'
    st = tmp_path / "a.safetensors"
    st.write_bytes(struct.pack("<Q", len(header)) + header + struct.pack("<2f", 1, 2))
    gguf = tmp_path / "a.gguf"
    gguf.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 0))
    for path in (st, gguf):
        assert scan_path(path).verdict == "safe"
        assert scan_path(path).findings == ()


# --- benign torch files ------------------------------------------------------------------

def _sd_checkpoint():
    return {"state_dict": {"w": torch.randn(3, 4), "h": torch.randn(2).half(), "b": torch.randn(2).bfloat16(),
                           "p": torch.nn.Parameter(torch.ones(2))},
            "global_step": np.int64(42), "epoch": 3, "tags": {"a", "b"}}


@pytest.mark.parametrize("zip_format", [True, False])
def test_torch_saved_checkpoints_are_safe_and_list_their_globals(tmp_path, zip_format):
    path = tmp_path / "sd.ckpt"
    torch.save(_sd_checkpoint(), path, _use_new_zipfile_serialization=zip_format)
    report = scan_path(path)
    assert report.verdict == "safe", report.findings
    if zip_format:
        data = zipfile.ZipFile(path).read("sd/data.pkl")
    else:  # the object pickle is the 4th of the legacy stream
        stream = io.BytesIO(path.read_bytes())
        for _ in range(4):
            start = stream.tell()
            pickletools.dis(stream, out=io.StringIO())
        data = path.read_bytes()[start:stream.tell()]
    expected = {"builtins.set" if g == "__builtin__.set" else g for g in _globals_by_pickletools(data)}
    assert set(report.globals_seen) == expected
    assert expected <= SAFE_GLOBALS


def test_lightning_like_object_is_suspicious_and_named(tmp_path):
    path, _ = hostile.lightning_like_checkpoint(tmp_path / "l.ckpt", tmp_path)
    report = scan_path(path)
    assert report.verdict == "suspicious"
    assert {f.what for f in report.findings} == {"fake_lightning.ModelCheckpoint"}


def test_torchscript_archive_is_dangerous(tmp_path):
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(path))
    report = scan_path(path)
    assert report.verdict == "dangerous"
    assert any(f.what == "TorchScript or Python code" for f in report.findings)


# --- the symbolic walk --------------------------------------------------------------------

def test_calling_an_unknown_global_is_dangerous_but_newobj_is_suspicious():
    reduce_call = hostile.pickle_of(hostile.call(hostile.glob("somepkg.mod", "Thing"), hostile.s("x")))
    newobj = hostile.pickle_of(hostile.glob("somepkg.mod", "Thing") + b")\x81")
    assert {f.severity for f in scan_pickle_bytes(reduce_call, where="r")} == {"suspicious", "dangerous"}
    assert {f.severity for f in scan_pickle_bytes(newobj, where="n")} == {"suspicious"}


def test_build_on_a_module_object_is_dangerous():
    data = hostile.pickle_of(hostile.glob("torch", "_utils") + b"}" + hostile.s("x") + b"Ns" + b"b")
    assert any(f.what == "BUILD on torch._utils" and f.severity == "dangerous"
               for f in scan_pickle_bytes(data, where="b"))


def test_protocol_2_fix_imports_maps_python2_names():
    data = hostile.pickle_of(hostile.call(hostile.glob("__builtin__", "set"), b"]"))
    assert scan_pickle_bytes(data, where="s") == []


def test_benign_pickle_has_no_findings_and_allowlisted_globals_pass():
    data = pickle.dumps({"a": [1, 2], "b": (3.5, "x"), "c": {1, 2}}, protocol=2)
    assert scan_pickle_bytes(data, where="x") == []


@pytest.mark.parametrize("protocol", range(6))
def test_decoder_agrees_with_pickletools(protocol):
    obj = {"x": [1, -2, 2**70, 3.25, "é", b"\x00\xff", None, True], "t": (1,), "s": {"a"}, "f": frozenset([2])}
    data = pickle.dumps(obj, protocol=protocol)
    ours = [(name, pos) for name, _arg, pos in iter_ops(data)]
    reference = [(op.name, pos) for op, _arg, pos in pickletools.genops(data)]
    assert ours == reference


def test_decoder_caps_the_number_of_opcodes():
    data = pickle.dumps(list(range(100)), protocol=2)
    with pytest.raises(PickleStreamError):
        list(iter_ops(data, max_ops=10))


@pytest.mark.parametrize("module, name, severity", [
    ("webbrowser", "open", "dangerous"), ("socket", "socket", "dangerous"),
    ("http.client", "HTTPConnection", "dangerous"), ("torch.hub", "load", "dangerous"),
    ("torch.jit", "load", "dangerous"), ("torch._inductor.codecache", "PyCodeCache", "dangerous"),
    ("torch.serialization", "load", "dangerous"), ("torch", "load", "dangerous"),
    ("builtins", "getattr", "dangerous"), ("builtins", "print", "dangerous"),
    ("importlib", "import_module", "dangerous"), ("ctypes", "CDLL", "dangerous"),
    ("collections", "OrderedDict.__init__", "dangerous"),
    ("argparse", "Namespace", "suspicious"), ("torch.nn.modules.linear", "Linear", "suspicious"),
    ("torch._utils", "_rebuild_tensor_v2", "safe"), ("numpy", "dtype", "safe"),
])
def test_classify_global(module, name, severity):
    assert classify_global(module, name)[0] == severity


def test_missing_file_raises_model_file_error(tmp_path):
    with pytest.raises(ModelFileError):
        scan_path(tmp_path / "nope.pt")


# --- no false alarms on tensor bytes that happen to decode as opcodes --------------------

def test_storage_bytes_that_decode_as_a_tiny_pickle_are_not_a_hidden_pickle(tmp_path):
    entries = hostile.benign_zip_entries()
    entries[2] = ("archive/data/0", b"\x82\xc1.=\xc3=\x8f\xbd" + b"\x00" * 8)  # EXT1 193, STOP: real fp16 bytes
    path = hostile.torch_zip(tmp_path / "fp16.pt", entries)
    assert scan_path(path).verdict == "safe"


def test_safetensors_whose_length_byte_is_an_opcode_is_safe(tmp_path):
    header = b'{"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}'
    header += b" " * (0x182 - len(header))  # length 0x182: byte 0 decodes as EXT1
    path = tmp_path / "a.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\x00")
    assert path.read_bytes()[0] == 0x82
    assert scan_path(path).verdict == "safe"


# --- our own caps never hide a payload ---------------------------------------------------

def test_hitting_the_opcode_cap_is_dangerous_not_silently_fine(tmp_path, monkeypatch):
    from workers.modelfiles import pickle_scan
    monkeypatch.setattr(pickle_scan, "MAX_OPS", 50)
    padding = b"N0" * 100
    first = tmp_path / "first.pkl"
    first.write_bytes(hostile.pickle_of(padding + b"}"))
    second = tmp_path / "second.pkl"
    second.write_bytes(hostile.pickle_of(b"}") + hostile.pickle_of(padding) + hostile.os_system(tmp_path / "C"))
    for path in (first, second):
        report = scan_path(path)
        assert report.verdict == "dangerous"
        assert any(f.what == "pickle too large to analyse" for f in report.findings)


def test_long_data_string_lines_do_not_stop_the_walk(tmp_path):
    path = tmp_path / "long.pkl"
    path.write_bytes(b"S'" + b"a" * (2 << 20) + b"'\n0" + b"cos\nsystem\n(S'true'\ntR.")
    report = scan_path(path)
    assert "os.system" in report.globals_seen
    assert report.verdict == "dangerous"
