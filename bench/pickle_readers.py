"""Time the pickle scanner and the restricted reader against another checkout, alternating.

    .venv/bin/python bench/pickle_readers.py --before DIR [--rounds 5] [--ckpt-mib 500]

DIR is another checkout (e.g. `git archive main | tar -x -C DIR`). Files are built under
bench/out/pickle_readers/ (git-ignored) once: a ~500 MiB torch checkpoint of ~1,100 tensors
(torch.save, test dependency), a checkpoint of 60,000 small tensors (its data.pkl is what
costs), and opcode-heavy pickles (5M memo entries; plain containers at protocols 2 and 5).
Each round runs one child per checkout, this one and DIR in turn, and each child times
scan_path, load_restricted of the pickle, and the torch reader (fingerprint_path) where it
applies. The table shows the best and median of the rounds and after/before of the best.
Nothing here unpickles anything a file could have chosen: the pickles are ours.
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "pickle_readers"
_CHILD = r"""
import json, sys, time, zipfile
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from workers.modelfiles.pickle_scan import scan_path
from workers.modelfiles.restricted_pickle import load_restricted
from workers.modelfiles.fingerprint import fingerprint_path
path, kind = Path(sys.argv[2]), sys.argv[3]

def timed(fn):
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started

out = {"scan": timed(lambda: scan_path(path))}
if kind == "ckpt":
    with zipfile.ZipFile(path) as z:
        data = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    out["reader"] = timed(lambda: load_restricted(data))
    out["fingerprint"] = timed(lambda: fingerprint_path(path))
elif kind == "plain":
    data = path.read_bytes()
    out["reader"] = timed(lambda: load_restricted(data))
print(json.dumps(out))
"""


def _torch_checkpoint(path: Path, total_mib: int, count: int) -> None:
    import torch
    torch.manual_seed(0)
    per = max(1, total_mib * (1 << 20) // 2 // count)  # fp16 elements per tensor
    state = {f"model.diffusion_model.block.{i}.weight": torch.randn(per).half().reshape(-1, 1) for i in range(count)}
    torch.save({"state_dict": state, "global_step": 1000}, path)


def ensure_files(ckpt_mib: int) -> list[tuple[Path, str]]:
    OUT.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT))
    from bench.hostile_memory import memo_flood
    files = []
    big = OUT / f"sd_{ckpt_mib}mib.ckpt"
    if not big.exists():
        _torch_checkpoint(big, ckpt_mib, 1100)
    many = OUT / "many_small_tensors.ckpt"
    if not many.exists():
        _torch_checkpoint(many, 8, 60_000)
    files += [(big, "ckpt"), (many, "ckpt")]
    flood = OUT / "memo_flood.pkl"
    if not flood.exists():
        memo_flood(flood)
    files.append((flood, "plain"))
    plain = {"rows": [[i, float(i), str(i), (i, None, True)] for i in range(200_000)]}  # ~1.4M values: under MAX_VALUES
    for protocol in (2, 5):
        p = OUT / f"plain_protocol{protocol}.pkl"
        if not p.exists():
            p.write_bytes(pickle.dumps(plain, protocol=protocol))
        files.append((p, "plain"))
    return files


def run_child(code: Path, path: Path, kind: str) -> dict:
    done = subprocess.run([sys.executable, "-c", _CHILD, str(code), str(path), kind],
                          capture_output=True, text=True, timeout=1800)
    if done.returncode:
        raise SystemExit(f"child failed on {path.name} with {code}:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--before", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ckpt-mib", type=int, default=500)
    args = parser.parse_args()
    files = ensure_files(args.ckpt_mib)
    codes = {"after": ROOT, "before": args.before.resolve()}
    times: dict[tuple[str, str, str], list[float]] = {}
    for n in range(args.rounds):
        order = list(codes) if n % 2 == 0 else list(codes)[::-1]
        for path, kind in files:
            for label in order:
                for what, seconds in run_child(codes[label], path, kind).items():
                    times.setdefault((path.name, what, label), []).append(seconds)
        print(f"round {n + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    print(f"{args.rounds} rounds, alternating; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(f"{'file':<28} {'step':<12} {'before best/median':>20} {'after best/median':>20} {'after/before':>13}")
    for path, _ in files:
        for what in ("scan", "reader", "fingerprint"):
            if (path.name, what, "after") not in times:
                continue
            b, a = times[(path.name, what, "before")], times[(path.name, what, "after")]
            print(f"{path.name:<28} {what:<12} {min(b):>9.3f}/{statistics.median(b):<9.3f}s "
                  f"{min(a):>9.3f}/{statistics.median(a):<9.3f}s {min(a) / min(b):>12.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
