"""Fill a PostgreSQL database with a large ModelXRef library for the load test (bench/load/run.py).

N LocalFile rows (default 1,000,000) spread over 100 users, each hashed (FileHashes with every hash kind),
fingerprinted (content/precision/bf16 ids; every 5th file a checkpoint with 3 LocalComponent rows), 10 % of
them exact copies of another file of the same owner (a duplicate group each); N/10 SourceModel rows with
2 versions each (N/5 SourceVersion) and 2 files a version (2N/5 SourceFile): the files whose content is in
the catalog get a Match row and their best_model_name. One API token per user and a few of its files and hashes
are written to --credentials (JSON) for the load test (run.py makes the sessions, with its secret key).

The database (default modelxref_load) is dropped and created on the server of --postgres; it is migrated
with Django, the big tables lose their secondary indexes and foreign keys, are filled with COPY, and get
them back (one CREATE INDEX beats a million index updates).

    .venv/bin/python bench/load/generate.py [--files 1000000] [--postgres postgres://postgres@127.0.0.1:5432/modelxref_load]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/modelxref_load"
USERS = 100
PASSWORD = "load-pw-123"
TYPES = ("Checkpoint", "LORA", "LORA", "LORA", "VAE", "TextualInversion")
BASES = ("SD 1.5", "SDXL 1.0", "Pony", "Flux.1 D")
WORDS = ("pony", "landscape", "anime", "realism", "ink", "dragon", "portrait", "cyber", "forest", "noir",
         "pastel", "mecha", "castle", "retro", "studio", "glow", "winter", "desert", "ocean", "neon")
BIG_TABLES = ("models_catalog_localfile", "models_catalog_filehashes", "models_catalog_localcomponent",
              "models_catalog_match", "models_catalog_sourcemodel", "models_catalog_sourceversion",
              "models_catalog_sourcefile")


def hexd(seed: str, n: int = 64) -> str:
    return hashlib.sha256(seed.encode()).hexdigest()[:n]


def hashes_of(content: int) -> dict:
    """The hash set of one piece of content, as the app stores it: lower-case hex (catalog_store and the hash
    engine lower Civitai's upper-case values), so the load test's lookups find what they ask for."""
    sha = hexd(f"c{content}")
    return {"sha256": sha, "autov1": hexd(f"a1{content}", 8), "autov2": sha[:10], "sha256_12": sha[:12],
            "autov3": hexd(f"a3{content}", 12), "autov3_full": hexd(f"a3{content}"),
            "crc32": hexd(f"crc{content}", 8), "blake3": hexd(f"b3{content}")}


def recreate_database(url: str) -> None:
    import psycopg

    base, name = url.rsplit("/", 1)
    if name in ("test", "postgres", "template0", "template1"):
        raise SystemExit(f"refusing to drop database {name!r}: give the load test its own")
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
        # The data fits in memory (as it does on any server sized for it): with the default 4.0 the planner
        # joins a user's 10,000 files to FileHashes by a sequential scan of all 1M rows (docs/BENCHMARKS.md).
        conn.execute(f'ALTER DATABASE "{name}" SET random_page_cost = 1.1')


def setup_django(url: str, data_dir: Path) -> None:
    os.environ.update({"DATABASE_URL": url, "MODELXREF_DATA_DIR": str(data_dir), "CIVITAI_ENABLED": "false",
                       "DJANGO_SETTINGS_MODULE": "config.settings"})
    os.environ.pop("REDIS_URL", None)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


class Loader:
    """COPY rows into a table, filling every NOT NULL column the row leaves out with a neutral value."""

    NEUTRAL = {"text": "", "character varying": "", "integer": 0, "bigint": 0, "smallint": 0, "boolean": False,
               "double precision": 0.0, "jsonb": "{}", "timestamp with time zone": None}

    def __init__(self, conn):
        self.conn = conn
        self.now = datetime.now(timezone.utc)

    def columns(self, table: str) -> list[tuple[str, str, bool]]:
        rows = self.conn.execute(
            "SELECT column_name, data_type, is_nullable = 'YES' FROM information_schema.columns "
            "WHERE table_name = %s ORDER BY ordinal_position", (table,)).fetchall()
        return rows

    def copy(self, table: str, rows, given: list[str]) -> int:
        cols = self.columns(table)
        fill = {}
        for name, dtype, nullable in cols:
            if name in given or nullable:
                continue
            value = self.NEUTRAL.get(dtype, "")
            fill[name] = self.now if dtype.startswith("timestamp") else value
        names = given + list(fill)
        extra = tuple(fill.values())
        n = 0
        quoted = ", ".join('"%s"' % n for n in names)
        with self.conn.cursor() as cur, cur.copy(f"COPY {table} ({quoted}) FROM STDIN") as cp:
            for row in rows:
                cp.write_row(row + extra)
                n += 1
        return n


def strip_indexes(conn) -> list[str]:
    """Drop the secondary indexes and foreign keys of the big tables; return the DDL that restores them."""
    restore = []
    for table in BIG_TABLES:
        for name, ddl in conn.execute(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s AND indexname NOT IN "
                "(SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass)", (table, table)).fetchall():
            conn.execute(f'DROP INDEX "{name}"')
            restore.append(ddl)
    for table in BIG_TABLES:
        for name, ddl in conn.execute(
                "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s::regclass "
                "AND contype = 'f'", (table,)).fetchall():
            conn.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
            restore.append(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {ddl}')
    return restore


def generate(url: str, files: int, credentials: Path) -> dict:
    import psycopg
    from django.contrib.auth.hashers import make_password

    from models_catalog.services.tokens import token_digest

    timings = {}
    t0 = time.monotonic()
    n_models, n_versions, n_sources = max(1, files // 10), max(2, files // 5), max(4, 2 * files // 5)
    per_user = max(1, files // USERS)
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    with psycopg.connect(url.replace("postgres://", "postgresql://", 1)) as conn:
        restore = strip_indexes(conn)
        load = Loader(conn)
        pw = make_password(PASSWORD)
        users = [(i + 1, pw, False, f"load{i:02d}", "", "", f"load{i:02d}@example.org", False, True, start)
                 for i in range(USERS)]
        load.copy("auth_user", iter(users), ["id", "password", "is_superuser", "username", "first_name",
                                             "last_name", "email", "is_staff", "is_active", "date_joined"])
        creds = []
        for i in range(USERS):
            key = f"mxr_load{i:02d}_{hexd(f'token{i}', 32)}"
            conn.execute("INSERT INTO models_catalog_apitoken (user_id, name, prefix, digest, created_at) "
                         "VALUES (%s, 'load', %s, %s, now())", (i + 1, key[:12], token_digest(key)))
            creds.append({"username": f"load{i:02d}", "token": key, "user_id": i + 1})

        def model_rows():
            for m in range(n_models):
                name = f"{WORDS[m % 20].title()} {WORDS[(m // 20) % 20].title()} {hexd(f'm{m}', 6)}"
                yield (m + 1, "civitai", str(100000 + m), name, TYPES[m % len(TYPES)], False, "",
                       f"https://civitai.com/models/{100000 + m}", "civitai.com", "{}", start)
        load.copy("models_catalog_sourcemodel", model_rows(),
                  ["id", "source", "external_id", "name", "type", "nsfw", "description", "url", "site", "raw",
                   "fetched_at"])

        def version_rows():
            for v in range(n_versions):
                m = v % n_models
                words = json.dumps([f"tw_{hexd(f'w{v}', 8)}", f"{WORDS[v % 20]} style"])
                yield (v + 1, m + 1, str(500000 + v), f"v{v // n_models + 1}.0", BASES[m % len(BASES)], words,
                       start + timedelta(minutes=v), "{}", start)
        load.copy("models_catalog_sourceversion", version_rows(),
                  ["id", "model_id", "external_id", "name", "base_model", "trained_words", "published_at", "raw",
                   "fetched_at"])
        hash_cols = ["sha256", "sha256_12", "autov1", "autov2", "autov3", "autov3_full", "crc32", "blake3"]

        def source_rows():
            for s in range(n_sources):
                h = hashes_of(s)
                yield (s + 1, s % n_versions + 1, str(900000 + s), f"src_{s}.safetensors", 2_000_000 + s,
                       "Model", "SafeTensor", "fp16", "pruned", s < n_versions, *(h[k] for k in hash_cols))
        load.copy("models_catalog_sourcefile", source_rows(),
                  ["id", "version_id", "external_id", "name", "size", "file_type", "format", "fp", "size_kind",
                   "primary", *hash_cols])
        conn.commit()
        timings["catalog"] = time.monotonic() - t0

        # File i: owner i // per_user; every 10th file is an exact copy (renamed) of the file before it.
        def content_of(i: int) -> int:
            return (i - 1 if i % 10 == 9 else i) - (i // 10)  # 9 distinct contents in every 10 files

        def matched(i: int) -> bool:
            return content_of(i) < n_sources

        def file_rows():
            for i in range(files):
                owner = min(i // per_user, USERS - 1) + 1
                c = content_of(i)
                folder = f"/data/models/{WORDS[c % 20]}/{(i // 1000) % 100:02d}"
                name = f"{WORDS[c % 20]}_{hexd(f'n{i}', 8)}{'_copy' if i % 10 == 9 else ''}.safetensors"
                model = ""
                if matched(i):
                    m = (c % n_versions) % n_models
                    model = f"{WORDS[m % 20].title()} {WORDS[(m // 20) % 20].title()} {hexd(f'm{m}', 6)}"
                verdict = "dangerous" if i % 100 == 42 else "safe"
                cid = hexd(f"content{c}")
                yield (i + 1, owner, "local", f"{folder}/{name}", "", name, False, 2_000_000 + c, 2049, i,
                       1_700_000_000_000_000_000 + i, "done", 2_000_000 + c, 2_000_000 + c,
                       "safetensors", verdict, "[]", json.dumps({"version": 2, "content_id": cid}),
                       cid, hexd(f"prec{c}"), hexd(f"bf{c}"), model, start + timedelta(seconds=i), start,
                       start + timedelta(seconds=i))
        load.copy("models_catalog_localfile", file_rows(),
                  ["id", "owner_id", "origin", "path", "host", "name", "is_folder", "size", "device", "inode",
                   "mtime_ns", "status", "bytes_done", "bytes_total", "format", "safety_verdict",
                   "safety_findings", "fingerprint", "content_id", "precision_id", "bf16_id", "best_model_name",
                   "created_at", "updated_at", "hashed_at"])
        timings["files"] = time.monotonic() - t0

        def hash_rows():
            for i in range(files):
                h = hashes_of(content_of(i))
                owner = min(i // per_user, USERS - 1) + 1  # file_rows' owner: FileHashes.owner copies it
                yield (i + 1, i + 1, owner, 2_000_000 + content_of(i), "engine", start, *(h[k] for k in hash_cols))
        load.copy("models_catalog_filehashes", hash_rows(),
                  ["id", "local_file_id", "owner_id", "size", "source", "computed_at", *hash_cols])
        timings["hashes"] = time.monotonic() - t0

        def component_rows():
            n = 0
            for i in range(0, files, 5):
                c = content_of(i)
                for part in ("unet", "vae", "text_encoder"):
                    n += 1
                    yield (n, i + 1, part, hexd(f"{part}{c}"), hexd(f"{part}p{c}"), 600_000 + c)
        load.copy("models_catalog_localcomponent", component_rows(),
                  ["id", "local_file_id", "name", "content_id", "precision_id", "nbytes"])

        def match_rows():
            n = 0
            for i in range(files):
                if matched(i):
                    n += 1
                    s = content_of(i)  # source file s is of version s % n_versions, of model version % n_models
                    yield (n, i + 1, s + 1, "renamed" if i % 10 == 9 else "exact", "SHA256 agrees", start,
                           min(i // per_user, USERS - 1) + 1, (s % n_versions) % n_models + 1)
        load.copy("models_catalog_match", match_rows(),
                  ["id", "local_file_id", "source_file_id", "kind", "evidence", "created_at", "owner_id", "model_id"])
        conn.commit()
        timings["copy"] = time.monotonic() - t0
        for ddl in restore:
            conn.execute(ddl)
        conn.commit()
        timings["indexes"] = time.monotonic() - t0
        for table in BIG_TABLES + ("auth_user", "models_catalog_apitoken"):
            conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                         f"(SELECT coalesce(max(id), 1) FROM {table}))")
        conn.commit()
    with psycopg.connect(url.replace("postgres://", "postgresql://", 1), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    timings["analyze"] = time.monotonic() - t0
    for c in creds:
        c["sample"] = sample_for(c["user_id"], per_user, files, content_of)
    credentials.write_text(json.dumps({"files": files, "users": creds}, indent=1))
    return {"files": files, "models": n_models, "versions": n_versions, "source_files": n_sources,
            "timings": {k: round(v, 1) for k, v in timings.items()}}


def sample_for(user_id: int, per_user: int, files: int, content_of) -> dict:
    """A few of this user's files and their hashes, for the load test's lookups and detail pages."""
    first = (user_id - 1) * per_user
    ids = [first + k for k in (0, 7, per_user // 3, per_user // 2, per_user - 1) if first + k < files]
    return {"file_ids": [i + 1 for i in ids], "hashes": [hashes_of(content_of(i)) for i in ids],
            "words": [WORDS[content_of(i) % 20] for i in ids]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=1_000_000)
    ap.add_argument("--postgres", default=DEFAULT_URL)
    ap.add_argument("--credentials", type=Path, default=ROOT / "bench" / "out" / "load-credentials.json")
    ap.add_argument("--data-dir", type=Path, default=ROOT / "bench" / "out" / "load-data")
    args = ap.parse_args()
    args.credentials.parent.mkdir(parents=True, exist_ok=True)
    args.data_dir.mkdir(parents=True, exist_ok=True)
    t = time.monotonic()
    recreate_database(args.postgres)
    setup_django(args.postgres, args.data_dir)
    print(f"migrated in {time.monotonic() - t:.1f} s", flush=True)
    print(json.dumps(generate(args.postgres, args.files, args.credentials)))


if __name__ == "__main__":
    main()
