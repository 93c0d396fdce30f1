"""My files at 100,000 files: query count and time of a page, on the web page and through the API.

Creates a throw-away SQLite database in a temp data dir with one user owning N LocalFile rows
(bulk_create: 2,000 catalog models, 70% of the files matched to one, hashes for all, 100 folders),
then times with Django's test client, best of --repeats, each request a fresh one:

- the first page (newest first);
- a deep page, through the cursor of the row 90% down the list (newest and by name);
- filtered pages (model type, a rare safety verdict, not identified, a folder);
- searches (part of a model name, a file's SHA256);
- the size and model sorts (the model sort's key, the best match's model name, is stored on the row).

Not a test: it prints a table (and --markdown prints it for docs/BENCHMARKS.md). With
--postgres URL it runs on a throw-away database created (and dropped) on that server instead,
e.g. --postgres postgres://postgres@127.0.0.1:5432/test.

    .venv/bin/python bench/file_list.py [--files 100000] [--repeats 3] [--markdown] [--postgres URL]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TYPES = ("Checkpoint", "LORA", "LORA", "LORA", "VAE", "TextualInversion")
BASES = ("SD 1.5", "SDXL 1.0", "Pony", "Flux.1 D")


def setup_django(work: Path, database_url: str | None = None) -> None:
    os.environ.update({"MODELXREF_DATA_DIR": str(work / "data"), "CIVITAI_ENABLED": "false",
                       "DJANGO_SETTINGS_MODULE": "config.settings"})
    os.environ.pop("DATABASE_URL", None)
    if database_url:
        os.environ["DATABASE_URL"] = database_url
    os.environ.pop("REDIS_URL", None)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def seed(n: int):
    """One user with `n` files; returns (user, a SHA256 of one of them)."""
    from django.contrib.auth import get_user_model

    from models_catalog.models import FileHashes, LocalFile, Match, SourceFile, SourceModel, SourceVersion

    user = get_user_model().objects.create_user("bench", password="bench-pw-123")
    models = SourceModel.objects.bulk_create(
        SourceModel(source="civitai", external_id=str(i), name=f"Model {i:04d} {('Ink', 'Photo', 'Anime', 'Real')[i % 4]}",
                    type=TYPES[i % len(TYPES)]) for i in range(2000))
    versions = SourceVersion.objects.bulk_create(
        SourceVersion(model=m, external_id="v1", name="v1.0", base_model=BASES[m.pk % len(BASES)],
                      trained_words=[f"word{m.pk}"]) for m in models)
    source_files = SourceFile.objects.bulk_create(
        SourceFile(version=v, external_id="f", name=f"model_{v.pk}.safetensors") for v in versions)
    verdicts = ["safe"] * 97 + ["suspicious", "dangerous", "unreadable"]
    files = LocalFile.objects.bulk_create(
        (LocalFile(owner=user, origin="registered", path=f"/data/models/d{i % 100:02d}/file_{i:06d}.safetensors",
                   name=f"file_{i:06d}.safetensors", status="done", size=(i * 7919) % 7_000_000_000 + 1,
                   format="safetensors", safety_verdict=verdicts[i % 100], bytes_total=1, bytes_done=1)
         for i in range(n)), batch_size=5000)
    FileHashes.objects.bulk_create(
        (FileHashes(local_file=f, owner_id=f.owner_id, size=f.size, sha256=f"{f.pk:064x}", autov2=f"{f.pk:010x}", autov3=f"{f.pk:012x}",
                    crc32=f"{f.pk % 2**32:08x}", blake3=f"{f.pk + 10**12:064x}") for f in files), batch_size=5000)
    kinds = ["exact"] * 5 + ["renamed", "converted", "precision", "partial"]
    Match.objects.bulk_create(
        (Match(local_file=f, source_file=source_files[i % len(source_files)], kind=kinds[i % len(kinds)], evidence="e")
         for i, f in enumerate(files) if i % 10 < 7), batch_size=5000)
    # What matching.local_file_match stores with each file's matches (one match each here).
    for i, f in enumerate(files):
        if i % 10 < 7:
            f.best_model_name = models[i % len(source_files)].name
    LocalFile.objects.bulk_update([f for i, f in enumerate(files) if i % 10 < 7], ["best_model_name"], batch_size=5000)
    return user, f"{files[n // 2].pk:064x}"


def deep_cursor(user, sort: str, fraction: float = 0.9) -> str:
    """The cursor a reader would hold after paging 90% of the way down (computed here with one OFFSET)."""
    from models_catalog.models import LocalFile
    from models_catalog.selectors import encode_cursor

    rows = LocalFile.objects.filter(owner=user)
    offset = int(rows.count() * fraction)
    if sort == "name":
        row = rows.order_by("name", "id").values("name", "id")[offset]
        return encode_cursor([0, row["name"], row["id"]])
    if sort == "model":  # 90% down is among the identified files (70% of them) ... or past them
        row = rows.exclude(best_model_name="").order_by("best_model_name", "id").values("best_model_name", "id")
        row = row[int(rows.exclude(best_model_name="").count() * fraction)]
        return encode_cursor([0, row["best_model_name"], row["id"]])
    row = rows.order_by("-id").values("id")[offset]
    return encode_cursor([0, None, row["id"]])


def measure(call, repeats: int) -> tuple[float, int, int]:
    """(best seconds, queries, rows) of `call()`, a request that must answer 200."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as ctx:
        response = call()
    queries = len(ctx)  # now: the next request's start clears the log the context reads
    assert response.status_code == 200, response.content[:500]
    rows = len(response.json()["results"]) if response["Content-Type"].startswith("application/json") \
        else response.content.decode().count('<td class="name">')
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - started)
    return best, queries, rows


def postgres_database(server_url: str, *, drop: bool = False) -> str:
    """A fresh database on the server of `server_url` (or drop it again); returns its URL."""
    import psycopg

    name = f"modelxref_bench_files_{os.getpid()}"
    with psycopg.connect(server_url.replace("postgres://", "postgresql://", 1), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        if not drop:
            admin.execute(f'CREATE DATABASE "{name}"')
    return server_url.rsplit("/", 1)[0] + f"/{name}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--markdown", action="store_true", help="print the table for docs/BENCHMARKS.md")
    parser.add_argument("--postgres", metavar="URL", help="run on a throw-away database on this PostgreSQL server")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="modelxref-bench-files-"))
    setup_django(work, postgres_database(args.postgres) if args.postgres else None)
    try:
        return run(args, work)
    finally:
        if args.postgres:
            from django.db import connections

            connections.close_all()
            postgres_database(args.postgres, drop=True)


def run(args, work: Path) -> int:
    from django.db import connection
    from django.test import Client
    from rest_framework.test import APIClient

    from models_catalog.services.tokens import api_token_create

    started = time.perf_counter()
    user, sha256 = seed(args.files)
    seeded = time.perf_counter() - started
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")  # planner statistics, as autovacuum would have them by now
    web = Client()
    web.force_login(user)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {api_token_create(user=user)[1]}")
    cases = [
        ("first page (newest)", {}),
        ("deep page via cursor (newest, 90% down)", {"cursor": deep_cursor(user, "newest")}),
        ("deep page via cursor (name, 90% down)", {"sort": "name", "cursor": deep_cursor(user, "name")}),
        ("filtered: type=VAE", {"type": "VAE"}),
        ("filtered: safety=dangerous (1%)", {"safety": "dangerous"}),
        ("filtered: not identified", {"state": "unknown"}),
        ("filtered: folder /data/models/d42", {"folder": "/data/models/d42"}),
        ("search: model name 'model 0042'", {"search": "model 0042"}),
        ("search: a SHA256", {"search": sha256}),
        ("sort by size", {"sort": "size"}),
        ("sort by model", {"sort": "model"}),
        ("deep page via cursor (model, 90% down)", {"sort": "model", "cursor": deep_cursor(user, "model")}),
    ]
    results = []
    for label, params in cases:
        page = measure(lambda: web.get("/", params), args.repeats)
        rest = measure(lambda: api.get("/api/v1/files/", params), args.repeats)
        results.append((label, page, rest))
        print(f"{label:45s} page {page[0] * 1000:7.1f} ms {page[1]:3d} queries {page[2]:3d} rows | "
              f"API {rest[0] * 1000:7.1f} ms {rest[1]:3d} queries {rest[2]:3d} rows", flush=True)
    where = "PostgreSQL" if connection.vendor == "postgresql" else f"SQLite under {work}"
    print(f"({args.files:,} files seeded in {seeded:.1f} s; {where})")
    if args.markdown:
        print("\n| request | page | queries | API | queries |\n|---|---|---|---|---|")
        for label, page, rest in results:
            print(f"| {label} | {page[0] * 1000:.0f} ms | {page[1]} | {rest[0] * 1000:.0f} ms | {rest[1]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
