"""Duplicates at 100,000 files: time and memory of the grouping, the page and the API.

One user owning N LocalFile rows made with bulk_create (hashes and fingerprints for all);
--dup-rate of them (default 10%) sit in groups of three: an fp32 original, a renamed exact copy
and an fp16 cast (same precision_id). Times `duplicate_groups` (best of --repeats, peak Python
memory by tracemalloc), the /duplicates/ page and GET /api/v1/duplicates/, and the grouping as it
was before it moved into SQL (every file of the user loaded; commit a803303) for the ratio.

    .venv/bin/python bench/duplicates.py [--files 100000] [--postgres URL] [--markdown]
"""
from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from file_list import ROOT, postgres_database, setup_django  # noqa: E402

BEFORE_COMMIT = "a803303"  # the last grouping that loaded every file


def seed(n: int, dup_rate: float):
    from django.contrib.auth import get_user_model

    from models_catalog.models import FileHashes, LocalFile

    user = get_user_model().objects.create_user("bench", password="bench-pw-123")
    in_groups = int(n * dup_rate) // 3 * 3

    def row(i: int) -> LocalFile:
        g = i // 3 if i < in_groups else None
        role = i % 3 if g is not None else None
        content = f"c{g}" + ("-16" if role == 2 else "") if g is not None else f"u{i}"
        dtypes = {"F16": 100} if role == 2 else {"F32": 100}
        return LocalFile(owner=user, origin="registered", path=f"/data/models/d{i % 100:02d}/file_{i:06d}.safetensors",
                         name=f"file_{i:06d}.safetensors", status="done", size=2_000_000_000 if role != 2 else 1_000_000_000,
                         format="safetensors", safety_verdict="safe", content_id=content,
                         precision_id=f"p{g}" if g is not None else f"pu{i}", device=1, inode=i + 1,
                         fingerprint={"dtypes": dtypes, "components": {}})

    files = LocalFile.objects.bulk_create((row(i) for i in range(n)), batch_size=5000)

    def sha(i: int, f: LocalFile) -> str:
        if i < in_groups and i % 3 == 1:
            return f"{files[i - 1].pk:064x}"  # the renamed exact copy of the original before it
        return f"{f.pk:064x}"

    FileHashes.objects.bulk_create(
        (FileHashes(local_file=f, owner_id=f.owner_id, size=f.size, sha256=sha(i, f), autov2=sha(i, f)[:10], autov3_full=f"{f.pk:064x}")
         for i, f in enumerate(files)), batch_size=5000)
    return user, in_groups // 3


def load_before():
    """The grouping module as it was at BEFORE_COMMIT, imported under another name."""
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{BEFORE_COMMIT}:models_catalog/services/duplicates.py"],
                            capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / "duplicates_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("duplicates_before", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def timed(call, repeats: int) -> tuple[float, float, object]:
    """(best seconds, peak MiB of Python allocations, result)."""
    tracemalloc.start()
    result = call()
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - started)
    return best, peak, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--dup-rate", type=float, default=0.10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--postgres", metavar="URL", help="run on a throw-away database on this PostgreSQL server")
    parser.add_argument("--no-before", action="store_true", help="skip the old whole-library grouping")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="modelxref-bench-dups-"))
    setup_django(work, postgres_database(args.postgres) if args.postgres else None)
    try:
        return run(args)
    finally:
        if args.postgres:
            from django.db import connections

            connections.close_all()
            postgres_database(args.postgres, drop=True)


def run(args) -> int:
    from django.db import connection
    from django.test import Client
    from rest_framework.test import APIClient

    from models_catalog.services.tokens import api_token_create

    from models_catalog.services.duplicates import duplicate_groups

    started = time.perf_counter()
    user, expected_groups = seed(args.files, args.dup_rate)
    seeded = time.perf_counter() - started
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
    rows = []
    now, peak, groups = timed(lambda: duplicate_groups(owner=user), args.repeats)
    assert len(groups) == expected_groups, (len(groups), expected_groups)
    assert all(len(g.members) == 3 and g.lossless_bytes == 2_000_000_000 for g in groups)
    rows.append(("duplicate_groups (SQL candidates)", now, peak))
    if not args.no_before:
        before = load_before()
        old, old_peak, old_groups = timed(lambda: before.duplicate_groups(owner=user), args.repeats)
        assert len(old_groups) == expected_groups
        rows.append((f"duplicate_groups before ({BEFORE_COMMIT}: every file loaded)", old, old_peak))
    web = Client()
    web.force_login(user)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {api_token_create(user=user)[1]}")
    for label, call in (("the /duplicates/ page", lambda: web.get("/duplicates/")),
                        ("GET /api/v1/duplicates/", lambda: api.get("/api/v1/duplicates/"))):
        response = call()
        assert response.status_code == 200, response.content[:300]
        best, peak_, _ = timed(call, args.repeats)
        rows.append((f"{label} ({len(response.content) / 2**20:.1f} MiB)", best, peak_))
    where = "PostgreSQL" if connection.vendor == "postgresql" else "SQLite"
    print(f"{args.files:,} files, {expected_groups:,} groups of 3, seeded in {seeded:.1f} s; {where}")
    for label, best, peak_ in rows:
        print(f"{label:60s} {best * 1000:8.0f} ms  peak {peak_:7.1f} MiB")
    if not args.no_before:
        print(f"ratio before / now: {old / now:.1f}x time, {old_peak / peak:.1f}x memory")
    if args.markdown:
        print(f"\n| {where} | time | peak Python memory |\n|---|---:|---:|")
        for label, best, peak_ in rows:
            print(f"| {label} | {best * 1000:.0f} ms | {peak_:.1f} MiB |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
