"""Benchmark the one-pass hasher against OpenSSL and the peers' one-hash-per-pass way.

Run: `make bench` (= .venv/bin/python bench/hashing.py). Generates, once, a
2 GiB safetensors file under bench/out/ (git-ignored), warms the page cache,
then times, best of 3 each:
  ours        workers.hashing.hash_file: SHA256 AutoV1 AutoV2 AutoV3 CRC32 BLAKE3, one read
  openssl     `openssl dgst -sha256` alone (one hash, the floor of a single SHA-256 stream)
  sequential  what A1111 / InvokeAI / Civitai's legacy scanner do: a pass per hash
              (SHA256, then AutoV3, then BLAKE3, then CRC32), 1 MiB reads, one thread
plus the peak RSS of hash_file in a child process and 1,000 cached re-hashes.

--tune also times buffer sizes, ring depths and BLAKE3 thread counts.
--write-docs replaces the "## Hashing" section of docs/BENCHMARKS.md with the results.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import zlib
from pathlib import Path

import blake3

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from workers import hash_engine, hashing  # noqa: E402
from workers.hash_cache import HashCache, hash_file_cached  # noqa: E402

OUT = ROOT / "bench" / "out"
BIG = OUT / "model-2GiB.safetensors"
BIG_SIZE = 2 * 1024**3
SMALL_DIR = OUT / "small-files"
SMALL_COUNT = 1000
SMALL_SIZE = 64 * 1024
REPEATS = 3
GiB = 1024**3

TARGET_VS_OPENSSL = 1.25
TARGET_VS_SEQUENTIAL = 2.5
TARGET_RSS_MB = 150
TARGET_CACHED_S = 3.0


def make_big_file() -> None:
    if BIG.exists() and BIG.stat().st_size == BIG_SIZE:
        return
    OUT.mkdir(parents=True, exist_ok=True)
    # A fixed, space-padded header so the data starts 8-byte aligned, as safetensors writers do.
    header_len = 256
    data_len = BIG_SIZE - 8 - header_len
    header = {
        "__metadata__": {"format": "pt", "sshs_model_hash": "0" * 64},
        "weight": {"dtype": "U8", "shape": [data_len], "data_offsets": [0, data_len]},
    }
    raw = json.dumps(header).encode()
    assert len(raw) <= header_len, "header longer than its padded size"
    raw = raw.ljust(header_len, b" ")
    block = memoryview(os.urandom(64 * 1024 * 1024))
    tmp = BIG.with_suffix(".part")
    with open(tmp, "wb") as f:
        f.write(header_len.to_bytes(8, "little") + raw)
        left = data_len
        while left:
            n = f.write(block[: min(len(block), left)])
            left -= n
    tmp.replace(BIG)


def warm(path: Path) -> None:
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(16 * 1024 * 1024)
        while f.readinto(buf):
            pass


def best_of(fn) -> float:
    best = float("inf")
    for _ in range(REPEATS):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def openssl_sha256(path: Path) -> None:
    subprocess.run(["openssl", "dgst", "-sha256", str(path)], check=True, capture_output=True)


def sequential_peer_style(path: Path) -> dict[str, str]:
    """One hash per pass over the file, 1 MiB reads, one thread (A1111 / InvokeAI / legacy scanner)."""
    blk = 1024 * 1024
    out = {}
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(blk), b""):
            h.update(chunk)
    out["sha256"] = h.hexdigest()
    h = hashlib.sha256()  # kohya's addnet_hash_safetensors
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        f.seek(8 + n)
        for chunk in iter(lambda: f.read(blk), b""):
            h.update(chunk)
    out["autov3"] = h.hexdigest()
    h3 = blake3.blake3()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(blk), b""):
            h3.update(chunk)
    out["blake3"] = h3.hexdigest()
    crc = 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(blk), b""):
            crc = zlib.crc32(chunk, crc)
    out["crc32"] = crc.to_bytes(4, "little").hex()
    return out


# The launcher is a fresh, small process: a child forked straight from this
# (big) benchmark would inherit its RSS high-water mark through fork and exec.
_RSS_LAUNCHER = (
    "import resource, subprocess, sys;"
    "subprocess.run([sys.executable, '-c', sys.argv[1]], check=True);"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def peak_rss_mb(code: str) -> float:
    """Peak RSS of a child Python running `code` (ru_maxrss of RUSAGE_CHILDREN, in a small launcher)."""
    out = subprocess.run(
        [sys.executable, "-c", _RSS_LAUNCHER, code], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    return int(out.strip()) / 1024  # ru_maxrss is in KiB on Linux


def make_small_files() -> list[Path]:
    SMALL_DIR.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(SMALL_COUNT):
        p = SMALL_DIR / f"lora-{i:04d}.safetensors"
        if not p.exists() or p.stat().st_size != SMALL_SIZE:
            p.write_bytes(os.urandom(SMALL_SIZE))
        paths.append(p)
    return paths


def cached_rehash(paths: list[Path]) -> tuple[float, float]:
    cache_path = OUT / "hash-cache.sqlite"
    for suffix in ("", "-wal", "-shm"):
        Path(str(cache_path) + suffix).unlink(missing_ok=True)
    cache = HashCache(cache_path)
    start = time.perf_counter()
    for p in paths:
        hash_file_cached(p, cache=cache)
    cold = time.perf_counter() - start

    def warm_pass() -> None:
        for p in paths:
            _hashes, hit = hash_file_cached(p, cache=cache)
            assert hit, f"expected a cache hit for {p}"

    return cold, best_of(warm_pass)


def tune() -> None:
    print(f"\ntuning (best of {REPEATS}, GB/s; CPU = user+sys seconds of the best run):")
    original = (hash_engine.RING_DEPTH, hash_engine.BLAKE3_MAX_THREADS)
    for threads in (1, 2):
        for depth, mib in ((3, 8), (4, 4), (4, 8), (4, 16), (8, 2), (16, 1), (32, 1)):
            hash_engine.RING_DEPTH, hash_engine.BLAKE3_MAX_THREADS = depth, threads
            best = (float("inf"), 0.0)
            for _ in range(REPEATS):
                cpu0, start = os.times(), time.perf_counter()
                hashing.hash_file(BIG, buffer_size=mib * 1024 * 1024)
                wall, cpu1 = time.perf_counter() - start, os.times()
                best = min(best, (wall, (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)))
            print(
                f"  blake3 threads={threads} ring={depth:2d} buffer={mib:2d} MiB:"
                f" {BIG_SIZE / best[0] / 1e9:.2f} GB/s, CPU {best[1]:.2f} s"
            )
    hash_engine.RING_DEPTH, hash_engine.BLAKE3_MAX_THREADS = original


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def main() -> int:
    global REPEATS
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tune", action="store_true", help="also time buffer sizes / ring depths / blake3 threads")
    parser.add_argument("--repeats", type=int, default=REPEATS, help="best of N (default %(default)s)")
    parser.add_argument("--write-docs", action="store_true", help="rewrite the Hashing section of docs/BENCHMARKS.md")
    args = parser.parse_args()
    REPEATS = max(1, args.repeats)
    if shutil.which("openssl") is None:
        raise SystemExit("openssl not found on PATH")

    load_at_start = os.getloadavg()[0]
    make_big_file()
    warm(BIG)
    warm(BIG)

    ours_hashes = hashing.hash_file(BIG)
    peer = sequential_peer_style(BIG)
    assert (peer["sha256"], peer["autov3"], peer["blake3"], peer["crc32"]) == (
        ours_hashes.sha256,
        ours_hashes.autov3_full,
        ours_hashes.blake3,
        ours_hashes.crc32,
    ), "one-pass hashes disagree with the sequential reference"

    rss = peak_rss_mb(f"from workers.hashing import hash_file; hash_file({str(BIG)!r})")
    rss_base = peak_rss_mb("import workers.hashing")
    t_ours = best_of(lambda: hashing.hash_file(BIG))
    t_openssl = best_of(lambda: openssl_sha256(BIG))
    t_seq = best_of(lambda: sequential_peer_style(BIG))
    cold, warm_cached = cached_rehash(make_small_files())

    gbps = lambda t: BIG_SIZE / t / 1e9  # noqa: E731
    rows = [
        ("ours: hash_file, all six hashes, one read", f"{t_ours:.2f} s", f"{gbps(t_ours):.2f} GB/s"),
        ("`openssl dgst -sha256` (SHA-256 only)", f"{t_openssl:.2f} s", f"{gbps(t_openssl):.2f} GB/s"),
        ("sequential, a pass per hash (peers)", f"{t_seq:.2f} s", f"{gbps(t_seq):.2f} GB/s"),
    ]
    ratio_openssl = t_ours / t_openssl
    ratio_seq = t_seq / t_ours
    checks = [
        ("ours / openssl time", f"{ratio_openssl:.2f}x", f"<= {TARGET_VS_OPENSSL}x", ratio_openssl <= TARGET_VS_OPENSSL),
        ("sequential / ours time", f"{ratio_seq:.2f}x", f">= {TARGET_VS_SEQUENTIAL}x", ratio_seq >= TARGET_VS_SEQUENTIAL),
        (
            "peak RSS of hash_file (child process)",
            f"{rss:.0f} MB (bare import: {rss_base:.0f} MB)",
            f"< {TARGET_RSS_MB} MB",
            rss < TARGET_RSS_MB,
        ),
        (
            f"{SMALL_COUNT} unchanged files via hash_file_cached, warm cache",
            f"{warm_cached * 1000:.0f} ms (cold fill: {cold:.2f} s)",
            f"< {TARGET_CACHED_S:.0f} s",
            warm_cached < TARGET_CACHED_S,
        ),
    ]
    lines = [
        f"Machine: {os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {platform.processor() or platform.machine()},"
        f" Python {platform.python_version()}, CRC32 via {hash_engine.CRC32_IMPLEMENTATION},"
        f" {datetime.date.today().isoformat()}.",
        f"File: {BIG_SIZE / GiB:.0f} GiB safetensors, page cache warm; best of {REPEATS}."
        f" Buffers {hash_engine.DEFAULT_BUFFER_SIZE // (1024 * 1024)} MiB x ring {hash_engine.RING_DEPTH},"
        f" BLAKE3 threads {hash_engine.BLAKE3_MAX_THREADS}. Load average when started: {load_at_start:.2f}"
        f" (other work on the machine slows the two-thread hasher more than single-threaded OpenSSL).",
        "",
        "| what | time | throughput |",
        "|---|---|---|",
        *[f"| {a} | {b} | {c} |" for a, b, c in rows],
        "",
        "| check | measured | target | |",
        "|---|---|---|---|",
        *[f"| {a} | {b} | {c} | {verdict(ok)} |" for a, b, c, ok in checks],
    ]
    print("\n".join(lines))
    if args.tune:
        tune()
    if args.write_docs:
        write_docs(lines)
    return 0 if all(ok for *_rest, ok in checks) else 1


def write_docs(lines: list[str]) -> None:
    doc = ROOT / "docs" / "BENCHMARKS.md"
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    section = "## Hashing\n\n" + "\n".join(lines) + "\n"
    match = re.search(r"^## Hashing\n.*?(?=^## |\Z)", text, flags=re.S | re.M)
    if match:
        # Keep any hand-written notes after the generated tables (marked by "Notes:").
        old = match.group(0)
        notes = old[old.index("Notes:") :] if "Notes:" in old else ""
        text = text[: match.start()] + section + ("\n" + notes if notes else "\n") + text[match.end() :]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    doc.write_text(text)
    print(f"wrote {doc}")


if __name__ == "__main__":
    sys.exit(main())
