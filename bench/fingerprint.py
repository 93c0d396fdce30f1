"""Benchmark: tensor fingerprint throughput and peak memory.

    .venv/bin/python bench/fingerprint.py [--size-gib 2] [--no-torch]

Writes a ~2 GiB safetensors file of F32 tensors of realistic sizes (1-50 MB,
plus small biases/norms) under bench/out/ (git-ignored, reused across runs)
and, if the restricted torch reader exists, the same tensors as a torch zip
checkpoint made with torch.save. Then, per file:
- warm throughput of fingerprint_path (best of 3 after one warm-up run),
  next to a plain BLAKE3 of the file's bytes as the peer to compare with;
- peak RSS of a fresh child process that only fingerprints the file (its own
  getrusage ru_maxrss, printed as it exits); the target is for what the file
  costs: peak minus the interpreter+imports baseline (numba's LLVM alone is
  ~125 MiB, a fixed cost per worker process) < 2x the largest tensor + 100 MB.
Target throughput: >= 1 GB/s warm.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
sys.path.insert(0, str(ROOT))

MB = 1024 * 1024


def tensor_plan(total_bytes: int, seed: int = 0) -> list[tuple[str, tuple[int, ...]]]:
    """Names and F32 shapes summing to about total_bytes: big weights and their small biases."""
    rng = np.random.default_rng(seed)
    plan, used, i = [], 0, 0
    while used < total_bytes:
        mb = int(rng.integers(1, 51))
        cols = 1024
        rows = max(1, min(mb * MB, total_bytes - used) // (4 * cols))
        plan.append((f"blocks.{i}.weight", (rows, cols)))
        plan.append((f"blocks.{i}.bias", (rows,)))
        used += rows * cols * 4 + rows * 4
        i += 1
    return plan


def write_safetensors(path: Path, plan) -> None:
    header, offset = {}, 0
    for name, shape in plan:
        size = int(np.prod(shape)) * 4
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    rng = np.random.default_rng(1)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for _name, shape in plan:
            f.write((rng.standard_normal(shape, dtype=np.float32) * 0.02).tobytes())
    tmp.rename(path)


def write_torch_checkpoint(source: Path, path: Path) -> None:
    import torch

    from workers.modelfiles.safetensors_reader import iter_safetensors_tensors

    state = {t.name: torch.from_numpy(np.array(t.array)) for t in iter_safetensors_tensors(source)}
    tmp = path.with_suffix(".tmp")
    torch.save({"state_dict": state}, tmp)
    tmp.rename(path)


def ensure_files(size_gib: float, with_torch: bool) -> list[Path]:
    OUT.mkdir(parents=True, exist_ok=True)
    plan = tensor_plan(int(size_gib * 1024 * MB))
    st = OUT / f"fingerprint-{size_gib:g}gib.safetensors"
    if not st.exists():
        print(f"writing {st} ...", flush=True)
        write_safetensors(st, plan)
    files = [st]
    if with_torch:
        ckpt = OUT / f"fingerprint-{size_gib:g}gib.ckpt"
        if not ckpt.exists():
            print(f"writing {ckpt} (torch.save) ...", flush=True)
            # In a child so the parent's own RSS stays small.
            subprocess.run([sys.executable, __file__, "--make-ckpt", str(st), str(ckpt)], check=True)
        files.append(ckpt)
    return files


def best_of(n: int, fn):
    """(best wall time, last result) of n runs."""
    best, result = float("inf"), None
    for _ in range(n):
        started = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - started)
    return best, result


def blake3_file(path: Path) -> str:
    import blake3

    hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
    hasher.update_mmap(path)
    return hasher.hexdigest()


def largest_tensor_bytes(path: Path) -> int:
    from workers.modelfiles.safetensors_reader import read_safetensors_header

    return max(e.end - e.begin for e in read_safetensors_header(path).tensors)


def child_peak_rss(args: list[str]) -> int:
    """Peak RSS in bytes of a fresh child running this script with `args`.

    The child reports its own getrusage(RUSAGE_SELF).ru_maxrss on its last
    line: RUSAGE_CHILDREN in the parent only keeps the largest of all children.
    """
    done = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True)
    return int(done.stdout.strip().splitlines()[-1]) * 1024  # ru_maxrss is in KiB on Linux


def report_own_peak() -> None:
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-gib", type=float, default=2.0)
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--baseline", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--make-ckpt", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.make_ckpt:
        write_torch_checkpoint(Path(args.make_ckpt[0]), Path(args.make_ckpt[1]))
        return
    from workers.modelfiles.fingerprint import fingerprint_path

    if args.baseline:  # the imports, the compiled casts loaded, and no file read
        from workers.modelfiles.narrowing import FourNarrower
        FourNarrower(16)(np.zeros(16, dtype=np.uint32))
        report_own_peak()
        return
    if args.child:
        fingerprint_path(args.child)
        report_own_peak()
        return

    with_torch = not args.no_torch and importlib.util.find_spec("workers.modelfiles.torch_reader") is not None
    files = ensure_files(args.size_gib, with_torch)
    largest = largest_tensor_bytes(files[0])
    target_rss = 2 * largest + 100 * MB

    baseline = child_peak_rss(["--baseline"])
    peaks = {}
    for path in files:
        fingerprint_path(path)  # warm the page cache
        peaks[path] = child_peak_rss(["--child", str(path)])

    print(f"\nfingerprint benchmark: {os.cpu_count()} CPUs, numpy {np.__version__}")
    print(f"largest tensor {largest / MB:.0f} MiB -> RSS target < {target_rss / MB:.0f} MiB above the baseline; "
          f"interpreter+imports baseline {baseline / MB:.0f} MiB")
    header = (f"{'file':<34} {'size':>9} {'fingerprint':>12} {'blake3 file':>12} {'ratio':>6} "
              f"{'peak RSS':>9} {'-baseline':>9} {'ok':>4}  content_id")
    print(header)
    print("-" * len(header))
    for path in files:
        size = path.stat().st_size
        fp_s, fingerprint = best_of(3, lambda: fingerprint_path(path))
        b3_s, _ = best_of(3, lambda: blake3_file(path))
        fp_rate, b3_rate = size / fp_s / 1e9, size / b3_s / 1e9
        ok = fp_rate >= 1.0 and peaks[path] - baseline < target_rss
        print(f"{path.name:<34} {size / 2**30:>7.2f}Gi {fp_rate:>9.2f}GB/s {b3_rate:>9.2f}GB/s "
              f"{fp_rate / b3_rate:>6.2f} {peaks[path] / MB:>6.0f}MiB {(peaks[path] - baseline) / MB:>6.0f}MiB "
              f"{'yes' if ok else 'NO':>4}  "
              f"{fingerprint.content_id}")
    print("\nfingerprint = content + fp16, bf16, fp8 e4m3fn and fp8 e5m2 digests of every tensor (canonical forms, "
          "fingerprint v5); "
          "blake3 file = BLAKE3 (all threads) of the raw bytes, the lower bound for any content hash.")


if __name__ == "__main__":
    main()
