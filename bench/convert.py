"""Benchmark: pickle checkpoint -> safetensors, ours against the torch way, in the same run.

    .venv/bin/python bench/convert.py [--size-gib 2] [--repeats 2]

The input is a benign ~2 GiB Lightning-style .ckpt this script writes itself with torch.save
(bench/out/, git-ignored, reused): F32 tensors of 1-50 MiB with their biases, plus one 256 MiB
tensor so "bounded by the largest tensor" is visible, and epoch/global_step beside the state_dict.

Each way runs in a fresh child process, alternately, `--repeats` times (the best is kept):
- ours: workers.convert.convert_checkpoint (scan, plan, stream, fsync, re-read and verify);
- torch: torch.load(weights_only=True)["state_dict"] + safetensors.torch.save_file, what the
  common converters do (they hold the whole model in memory; no scan, no verification, no fsync).
Time is the conversion alone (imports excluded), peak RSS the child's VmHWM (/proc/self/status:
per process image, so the parent's own size cannot leak in as it does into ru_maxrss through
vfork+exec). Targets: ours <= 1.5x the torch time; our peak RSS <= largest tensor + 200 MB.
Both outputs must hold the same tensors (equal content_id).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
sys.path.insert(0, str(ROOT))

MB = 1000 * 1000
MiB = 1 << 20
BIG_TENSOR = 256 * MiB


def tensor_plan(total_bytes: int, seed: int = 0) -> list[tuple[str, tuple[int, ...]]]:
    import numpy as np

    rng = np.random.default_rng(seed)
    plan = [("model.diffusion_model.big.weight", (BIG_TENSOR // 4 // 4096, 4096))]
    used, i = BIG_TENSOR, 0
    while used < total_bytes:
        mb = int(rng.integers(1, 51))
        cols = 1024
        rows = max(1, min(mb * MiB, total_bytes - used) // (4 * cols))
        plan.append((f"model.diffusion_model.blocks.{i}.weight", (rows, cols)))
        plan.append((f"model.diffusion_model.blocks.{i}.bias", (rows,)))
        used += rows * cols * 4 + rows * 4
        i += 1
    return plan


def make_checkpoint(path: Path, size_gib: float) -> None:
    import torch

    gen = torch.Generator().manual_seed(1)
    state = {name: torch.randn(shape, generator=gen) * 0.02 for name, shape in tensor_plan(int(size_gib * 1024 * MiB))}
    tmp = path.with_suffix(".tmp")
    torch.save({"state_dict": state, "epoch": 3, "global_step": 12345}, tmp)
    tmp.rename(path)


def vm_hwm() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def child(way: str, source: str, out: str) -> None:
    """Run one way, print {"seconds", "peak_rss", "largest"} as JSON."""
    if way == "ours":
        from workers.convert import convert_checkpoint

        started = time.perf_counter()
        result = convert_checkpoint(source, out)
        seconds = time.perf_counter() - started
        largest = max(t.nbytes for t in result.plan.tensors)
    else:
        import torch
        from safetensors.torch import save_file

        started = time.perf_counter()
        state = torch.load(source, weights_only=True)["state_dict"]
        save_file(state, out, metadata={"format": "pt"})
        seconds = time.perf_counter() - started
        largest = max(t.numel() * t.element_size() for t in state.values())
    print(json.dumps({"seconds": seconds, "peak_rss": vm_hwm(), "largest": largest}))


def run_child(way: str, source: Path, out: Path) -> dict:
    if out.exists():
        out.unlink()
    done = subprocess.run([sys.executable, __file__, "--child", way, str(source), str(out)], check=True,
                          capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def baseline_rss() -> int:
    code = "import sys; sys.path.insert(0, %r); import workers.convert; import bench.convert as b; print(b.vm_hwm())" % str(ROOT)
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return int(done.stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-gib", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--make", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    if args.make:  # in a child, so the parent never holds the model
        make_checkpoint(Path(args.make[0]), float(args.make[1]))
        return

    OUT.mkdir(parents=True, exist_ok=True)
    source = OUT / f"convert-{args.size_gib:g}gib.ckpt"
    if not source.exists():
        print(f"writing {source} (torch.save, in a child) ...", flush=True)
        subprocess.run([sys.executable, __file__, "--make", str(source), str(args.size_gib)], check=True)
    outs = {"ours": OUT / "convert-ours.safetensors", "torch": OUT / "convert-torch.safetensors"}
    with open(source, "rb") as f:  # warm the page cache: both ways then read from memory
        while f.read(64 * MiB):
            pass
    load_before = os.getloadavg()
    runs: dict[str, list[dict]] = {"ours": [], "torch": []}
    for _ in range(args.repeats):
        for way in ("ours", "torch"):
            runs[way].append(run_child(way, source, outs[way]))
    load_after = os.getloadavg()
    base = baseline_rss()

    from workers.modelfiles.fingerprint import fingerprint_path

    same = fingerprint_path(outs["ours"]).content_id == fingerprint_path(outs["torch"]).content_id
    best = {way: min(r["seconds"] for r in rs) for way, rs in runs.items()}
    peak = {way: max(r["peak_rss"] for r in rs) for way, rs in runs.items()}
    largest = runs["ours"][0]["largest"]
    size = source.stat().st_size
    ratio = best["ours"] / best["torch"]
    rss_target = largest + 200 * MB
    print(f"\nconvert benchmark: {size / 2**30:.2f} GiB .ckpt, {os.cpu_count()} CPUs, largest tensor "
          f"{largest / MiB:.0f} MiB, load average {load_before[0]:.2f} before / {load_after[0]:.2f} after")
    print(f"{'way':<7} {'runs (s)':<18} {'best':>7} {'throughput':>11} {'peak RSS':>10}")
    for way in ("ours", "torch"):
        times = ", ".join(f"{r['seconds']:.2f}" for r in runs[way])
        print(f"{way:<7} {times:<18} {best[way]:>6.2f}s {size / best[way] / 1e9:>8.2f}GB/s "
              f"{peak[way] / MiB:>7.0f}MiB")
    print(f"ours / torch time: {ratio:.2f}x (target <= 1.5x: {'met' if ratio <= 1.5 else 'MISSED'})")
    print(f"our peak RSS: {peak['ours'] / MiB:.0f} MiB vs largest tensor + 200 MB = {rss_target / MiB:.0f} MiB "
          f"({'met' if peak['ours'] <= rss_target else 'MISSED'}); interpreter + imports alone {base / MiB:.0f} MiB")
    print(f"same tensors in both outputs (content_id): {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
