"""Benchmark-style check: peak memory of analysing hostile files.

    .venv/bin/python bench/hostile_memory.py [--code DIR] [--compare DIR] [--only NAME ...] [--write-docs]

Builds one file per hostile class under bench/out/hostile/ (git-ignored, rebuilt each run) and
analyses each (workers.modelfiles.analyse.analyse_path: sniff, pickle scan, tensor reading) in a
fresh child process, started by a small launcher that reads the child's peak RSS from
getrusage(RUSAGE_CHILDREN) (a child of this process would inherit its high-water mark).
Every class must stay under LIMIT_MB; the exit status says whether they all did.

--code DIR runs the children against another checkout; --compare DIR also runs each class against
DIR (e.g. `git archive main | tar -x -C DIR`) and adds its verdict and peak as "before" columns;
--write-docs replaces the "## Hostile files: peak memory" section of docs/BENCHMARKS.md.
Nothing here unpickles anything: the pickles are written opcode by opcode.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import struct
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "hostile"
sys.path.insert(0, str(ROOT))

from tests.workers.modelfiles import hostile  # noqa: E402

LIMIT_MB = 300
TIMEOUT_S = 900
_CHILD = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from workers.modelfiles.analyse import analyse_path
started = time.perf_counter()
try:
    result = analyse_path(Path(sys.argv[2]))
    outcome = {"verdict": result.verdict, "why": result.error or (result.findings[0]["why"] if result.findings else "")}
except BaseException as exc:  # the old code may run out of memory: that is a result too
    outcome = {"verdict": "crashed", "why": f"{type(exc).__name__}: {exc}"[:200]}
outcome["seconds"] = time.perf_counter() - started
print(json.dumps(outcome))
"""
_BASELINE = "import sys; sys.path.insert(0, sys.argv[1]); import workers.modelfiles.analyse; print('{}')"
# A child forked from this (large) process would inherit its RSS high-water mark, even after exec:
# a small launcher runs the child and reads RUSAGE_CHILDREN, which holds only the child's peak.
_LAUNCHER = (
    "import resource, subprocess, sys;"
    "done = subprocess.run([sys.executable, '-c', *sys.argv[1:]], capture_output=True, text=True);"
    "sys.stdout.write(done.stdout); sys.stderr.write(done.stderr[-2000:]);"
    "print(done.returncode);"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


# --- the hostile classes ---------------------------------------------------------------------

def _safetensors(path: Path, header: dict, data: bytes) -> Path:
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def huge_header_tensors(path: Path) -> Path:
    """A 90 MB header: 199,999 tensors (our cap is 200,000) with 400-character names, all read."""
    n, pad = 199_999, "x" * 380
    header = {f"model.{pad}.{i}": {"dtype": "U8", "shape": [1], "data_offsets": [i, i + 1]} for i in range(n)}
    return _safetensors(path, header, b"\0" * n)


def huge_header_small_tensors(path: Path) -> Path:
    """A 90 MB header of 900,000 one-byte tensors (json.loads would hold ~1 GB of objects)."""
    n = 900_000
    header = {f"t{i}": {"dtype": "U8", "shape": [1], "data_offsets": [i, i + 1]} for i in range(n)}
    header["__metadata__"] = {"pad": "p" * (90_000_000 - len(json.dumps(header)))}
    return _safetensors(path, header, b"\0" * n)


def huge_header_metadata(path: Path) -> Path:
    """A 94 MB header: six 15 MB metadata strings."""
    header = {"__metadata__": {f"k{i}": "v" * (15 << 20) for i in range(6)},
              "w": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}
    return _safetensors(path, header, b"\0")


def memo_doubling(path: Path) -> Path:
    """A list that doubles 60 times through the memo (2**60 leaves), no payload: reaches the reader."""
    body = b"]\x94"
    for n in range(60):
        body += b"(h" + bytes([n]) + b"h" + bytes([n]) + b"l\x94"
    path.write_bytes(hostile.pickle_of(body, protocol=4))
    return path


def memo_flood(path: Path) -> Path:
    """5,000,000 memo entries (the cap): a dict memo costs ~500 MB, a list 40 MB."""
    path.write_bytes(hostile.pickle_of(b"N\x940" * 4_999_999 + b"N", protocol=4))
    return path


def deep_marks(path: Path) -> Path:
    """MARKs nested one past our cap (100,000), then a payload."""
    path.write_bytes(hostile.pickle_of(b"(" * 100_001 + hostile.call(hostile.glob("os", "system"), hostile.s("x"))))
    return path


def deep_lists(path: Path) -> Path:
    """A list nested 99,999 deep: nothing dangerous, so the restricted reader builds it."""
    path.write_bytes(hostile.pickle_of(b"(" * 99_999 + b"N" + b"l" * 99_999, protocol=4))
    return path


def many_values(path: Path) -> Path:
    """20,000,000 empty lists in a 20 MB pickle: the scan finds nothing; the reader counts values."""
    path.write_bytes(hostile.pickle_of(b"(" + b"]" * 19_999_990 + b"l", protocol=4))
    return path


def findings_flood(path: Path) -> Path:
    """os.system named 1,000,000 times (11 MB)."""
    path.write_bytes(hostile.pickle_of(b"cos\nsystem\n0" * 1_000_000 + b"N"))
    return path


CLASSES = {
    "zip bomb (4 GiB declared)": ("zip_bomb.pt", lambda p: hostile.zip_bomb(p, OUT / "CANARY")),
    "zip bomb (lying header: 1 KiB)": ("zip_bomb_lying.pt", lambda p: hostile.zip_bomb_lying_header(p, OUT / "CANARY")),
    "huge header: 200K tensors, 90 MB": ("header_tensors.safetensors", huge_header_tensors),
    "huge header: 900K tensors, 90 MB": ("header_small_tensors.safetensors", huge_header_small_tensors),
    "huge header: 6 x 15 MB metadata": ("header_metadata.safetensors", huge_header_metadata),
    "memo expansion: 2**60 by doubling": ("memo_doubling.pkl", memo_doubling),
    "memo expansion: 5M entries": ("memo_flood.pkl", memo_flood),
    "deep nesting: 100,001 MARKs": ("deep_marks.pkl", deep_marks),
    "deep nesting: list 99,999 deep": ("deep_lists.pkl", deep_lists),
    "many values: 20M empty lists": ("many_values.pkl", many_values),
    "findings: os.system x 1M": ("findings_flood.pkl", findings_flood),
}


def run_child(code: Path, path: Path | None, child: str = _CHILD) -> dict:
    """Run `child` in a fresh process (through the launcher); its outcome and peak RSS."""
    args = [str(code)] + ([str(path)] if path else [])
    done = subprocess.run([sys.executable, "-c", _LAUNCHER, child, *args], capture_output=True, text=True,
                          timeout=TIMEOUT_S, check=True)
    *lines, returncode, peak_kib = done.stdout.strip().splitlines()
    if returncode != "0" or not lines:
        outcome = {"verdict": f"killed (exit {returncode})", "why": done.stderr.strip()[-200:], "seconds": float("nan")}
    else:
        outcome = json.loads(lines[-1])
    outcome["peak_kib"] = int(peak_kib)
    return outcome


def _mb(result: dict) -> str:
    return f"{result['peak_kib'] / 1024:.0f} MB" if result["peak_kib"] else "n/a"


def table(rows: list[tuple[str, int, dict, dict | None]], baseline_mb: float) -> str:
    compare = any(before for *_, before in rows)
    head = "| hostile class | file | verdict | peak RSS | time |" + (" before: verdict | before: peak RSS |" if compare else "")
    lines = [head, "|---" * (7 if compare else 5) + "|"]
    for name, size, r, before in rows:
        line = f"| {name} | {size / 1e6:.1f} MB | {r['verdict']} | {_mb(r)} | {r['seconds']:.1f} s |"
        if before:
            line += f" {before['verdict']} | {_mb(before)} |"
        lines.append(line)
    lines.append(f"| (bare import of the readers) | | | {baseline_mb:.0f} MB | |" + (" | |" if compare else ""))
    return "\n".join(lines)


NOTES = """
Notes:
- "before" in the committed table is `main` at 936e5f5 (`git archive 936e5f5 | tar -x -C DIR`), run
  on the same files: the zip bombs inflated to the old 1 GiB cap and copied it (2.1 GB), a 90 MB
  header went through json.loads (0.4-1 GB), a dict memo cost ~80 bytes an entry, every reference
  to os.system was a finding, and the restricted reader built 20M lists (4 GB).
- The verdict changes are intended: 900K tensors is past MAX_TENSORS (unreadable, with the
  reason); a memo-doubled graph or a list nested 99,999 deep cannot be read into tensors
  (unreadable, was "safe" with an error); 20M values on the stack is past MAX_STACK, which
  the scanner reports as too large to analyse (dangerous). 100,001 MARKs stops the scan at
  MAX_MARK_DEPTH (before: found the payload after them; dangerous either way).
- "200K tensors" is the largest header we read: 170 MB of it is the header (its 400-character
  names are kept), the rest the fingerprint's 200K digests.
- "5M entries" is slow, not big: 15M opcodes are walked by the scan, again by the torch
  reader's own scan, and then by the restricted reader.
"""


def write_docs(text: str) -> None:
    docs = ROOT / "docs" / "BENCHMARKS.md"
    current = docs.read_text()
    section = "## Hostile files: peak memory\n\n" + text.strip() + "\n"
    pattern = re.compile(r"^## Hostile files: peak memory\n.*?(?=^## |\Z)", re.S | re.M)
    updated = pattern.sub(lambda _: section + "\n", current) if pattern.search(current) else \
        current.rstrip("\n") + "\n\n" + section
    docs.write_text(updated.rstrip("\n") + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--code", type=Path, default=ROOT, help="checkout whose readers the children run")
    parser.add_argument("--compare", type=Path, help="another checkout to measure as 'before'")
    parser.add_argument("--only", nargs="*", help="substrings of class names to run")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    baseline = run_child(args.code.resolve(), None, _BASELINE)["peak_kib"] / 1024
    rows = []
    for name, (filename, build) in CLASSES.items():
        if args.only and not any(word in name for word in args.only):
            continue
        path = build(OUT / filename)
        result = run_child(args.code.resolve(), path)
        before = run_child(args.compare.resolve(), path) if args.compare else None
        rows.append((name, path.stat().st_size, result, before))
        print(f"{name}: {result['verdict']}, {_mb(result)}, {result['seconds']:.1f} s ({result['why'][:110]})"
              + (f"; before: {before['verdict']}, {_mb(before)}" if before else ""), flush=True)
        path.unlink()
    assert not (OUT / "CANARY").exists(), "a payload ran"
    text = table(rows, baseline)
    print()
    print(text)
    over = [name for name, _, r, _ in rows if not r["peak_kib"] or r["peak_kib"] / 1024 >= LIMIT_MB]
    print(f"\nall under {LIMIT_MB} MB: {'yes' if not over else 'NO: ' + ', '.join(over)}")
    if args.write_docs:
        load = os.getloadavg()[0]
        intro = (f"`python bench/hostile_memory.py`: each hostile class is built under `bench/out/hostile/` and "
                 f"analysed (`analyse_path`: sniff, scan, tensor reading) in a fresh child process that reports "
                 f"its peak RSS; every one must stay under {LIMIT_MB} MB"
                 + (f" (\"before\": the same files with the readers in `{args.compare.name}`)" if args.compare else "")
                 + f". Machine: {os.cpu_count()} CPUs, "
                 f"{platform.machine()}, Python {platform.python_version()}, {datetime.date.today()}, "
                 f"load average {load:.1f} when written.\n\n")
        write_docs(intro + text + "\n" + NOTES)
    return 0 if not over else 1


if __name__ == "__main__":
    sys.exit(main())
