"""Registration at scale (issue #14): 100,000 small files through `register` and 2 real workers.

Run: `nice .venv/bin/python bench/register_scale.py [--files 100000] [--variants one-host,two-hosts]
[--write-docs]`. Needs PostgreSQL on 127.0.0.1:5432 (a database modelxref_regscale is created for
each variant and dropped after) and Redis (BENCH_REDIS_URL, default db 9, flushed before and after).

Writes N small safetensors files (3 KiB of tensor data; every 10th a byte copy of the one before, so
duplicates are in the mix) in folders of 1,000 under a temp model root. For each variant it migrates a
fresh database, starts 2 celery worker processes, runs `manage.py register ROOT` (no --wait: this
script watches the database itself, with psycopg, so the watcher costs the workers nothing), and
waits until no row is queued, hashing or analysing. Then it checks: no row lost (rows == files), none
duplicated (one row per path), none stuck (nothing left queued / hashing / analysing after the
workers went quiet), and reports files/s of `register` and of hashing, and the peak RSS of the
register command (os.wait4's ru_maxrss: its own process only).

  one-host   two workers `-Q hashing,lookups --concurrency=1` on the same roots (one runs beat):
             two processes competing for the same queue.
  register-only  no worker: the register command alone (its speed and peak RSS, nothing competing).
  two-hosts  the Procfile's two lines as two hosts: `hashing` (-Q hashing, MODELXREF_MODEL_ROOTS set,
             its own data dir) and `lookups` (--beat -Q lookups, no model roots, another data dir).

Civitai is off (CIVITAI_ENABLED=false): this measures registration and hashing, not lookups
(bench/pipeline.py does those, against a stand-in).
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.procfile import Worker, procfile_workers, start_process, stop_workers  # noqa: E402

SECTION = "## Registration at scale (100,000 files)"
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")
POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
DB_NAME = "modelxref_regscale"
PAYLOAD_BYTES = 3072
DUPLICATE_EVERY = 10
PER_FOLDER = 1000
UNFINISHED = ("queued", "hashing", "analysing")
ONE_HOST_WORKER = ".venv/bin/celery -A config worker -Q hashing,lookups -n {name}@%h --loglevel=INFO --concurrency=1"


def write_safetensors(path: Path, payload: bytes) -> None:
    """A small valid safetensors file: one U8 tensor (as tests/catalog/conftest.py writes them)."""
    header = json.dumps({"w": {"dtype": "U8", "shape": [len(payload)], "data_offsets": [0, len(payload)]}}).encode()
    header += b" " * (-len(header) % 8)
    path.write_bytes(struct.pack("<Q", len(header)) + header + payload)


def write_library(root: Path, n: int) -> int:
    """N files; returns how many are byte copies of another."""
    rng = random.Random(20261202)
    payload = b""
    copies = 0
    for i in range(n):
        folder = root / f"d{i // PER_FOLDER:03d}"
        if i % PER_FOLDER == 0:
            folder.mkdir(parents=True)
        if i % DUPLICATE_EVERY == DUPLICATE_EVERY - 1:
            copies += 1  # the same bytes as the file before, under another name
        else:
            payload = rng.randbytes(PAYLOAD_BYTES)
        write_safetensors(folder / f"lora_{i:06d}.safetensors", payload=payload)
    return copies


@contextlib.contextmanager
def services():
    import psycopg
    import redis

    admin = psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True)
    admin.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')  # a run killed before its cleanup
    admin.execute(f'CREATE DATABASE "{DB_NAME}"')
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    try:
        yield f"postgres://postgres@127.0.0.1:5432/{DB_NAME}", REDIS_URL
    finally:
        client.flushdb()
        client.close()
        admin.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        admin.close()


def host_env(*, database_url: str, redis_url: str, data_dir: Path, roots: Path | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "MODELXREF_MODEL_ROOTS")}
    env.update({"DJANGO_SETTINGS_MODULE": "config.settings", "DATABASE_URL": database_url, "REDIS_URL": redis_url,
                "MODELXREF_DATA_DIR": str(data_dir), "CIVITAI_ENABLED": "false", "PYTHONUNBUFFERED": "1"})
    if roots is not None:
        env["MODELXREF_MODEL_ROOTS"] = str(roots)
    return env


def wait_ready(workers: list[Worker], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    for worker in workers:
        while "ready." not in worker.log_text():
            if worker.proc.poll() is not None or time.monotonic() > deadline:
                stop_workers(workers)
                raise SystemExit(f"worker {worker.name} did not start:\n{worker.log_text()}")
            time.sleep(0.2)


def manage(env: dict, *args: str) -> None:
    done = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")


def register(env: dict, root: Path) -> dict:
    """`manage.py register ROOT` as a user runs it; its wall time, output and peak RSS."""
    started = time.time()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, "manage.py", "register", str(root)], cwd=ROOT, env=env,
                                stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)  # the rusage of that process alone (not migrate's)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        out, err = out.read(), err.read()
    if proc.returncode:
        raise SystemExit(f"register failed:\n{out}\n{err}")
    return {"seconds": time.time() - started, "ended_at": time.time(), "output": out.strip(),
            "peak_rss_mib": usage.ru_maxrss / 1024}


def status_counts(conn) -> dict[str, int]:
    return dict(conn.execute("SELECT status, count(*) FROM models_catalog_localfile GROUP BY status").fetchall())


def watch(conn, *, expected: int, started: float, timeout: float, stall: float) -> dict:
    """Until every row is finished, nothing moved for `stall` seconds, or `timeout`."""
    last, last_change, first_done_at = None, time.time(), None
    while True:
        counts = status_counts(conn)
        finished = counts.get("done", 0) + counts.get("error", 0)
        now = time.time()
        if finished and first_done_at is None:
            first_done_at = now
        if counts != last:
            last, last_change = counts, now
        if sum(counts.values()) >= expected and not any(counts.get(s) for s in UNFINISHED):
            return {"counts": counts, "done_at": now, "first_done_at": first_done_at, "complete": True}
        if now - started > timeout or now - last_change > stall:
            return {"counts": counts, "done_at": now, "first_done_at": first_done_at, "complete": False}
        time.sleep(1)


def checks(conn, *, expected: int) -> dict:
    rows = conn.execute("SELECT count(*), count(DISTINCT path) FROM models_catalog_localfile").fetchone()
    hashed = conn.execute("SELECT count(*), count(DISTINCT sha256) FROM models_catalog_filehashes "
                          "WHERE sha256 <> ''").fetchone()
    errors = conn.execute("SELECT error, count(*) FROM models_catalog_localfile WHERE status = 'error' "
                          "GROUP BY error ORDER BY 2 DESC LIMIT 3").fetchall()
    unfinished = sum(status_counts(conn).get(s, 0) for s in UNFINISHED)
    return {"rows": rows[0], "distinct_paths": rows[1], "lost": expected - rows[0], "duplicated": rows[0] - rows[1],
            "stuck": unfinished, "hashed": hashed[0], "distinct_sha256": hashed[1], "errors": errors}


def start_variant(name: str, *, database_url: str, redis_url: str, work: Path, model_root: Path) -> list[Worker]:
    if name == "register-only":  # the register command alone: its speed and memory with no worker competing
        return []
    if name == "one-host":
        env = host_env(database_url=database_url, redis_url=redis_url, data_dir=work / "data", roots=model_root)
        return [start_process("w1", ONE_HOST_WORKER.format(name="w1") + " --beat", env, work),
                start_process("w2", ONE_HOST_WORKER.format(name="w2"), env, work)]
    lines = procfile_workers()  # the lines `make run` starts, each on a "host" of its own
    hashing = host_env(database_url=database_url, redis_url=redis_url, data_dir=work / "hashing-host",
                       roots=model_root)
    lookups = host_env(database_url=database_url, redis_url=redis_url, data_dir=work / "lookups-host", roots=None)
    return [start_process("hashing", lines["hashing"], hashing, work),
            start_process("lookups", lines["lookups"], lookups, work)]


def task_count(worker: Worker) -> int:
    return worker.log_text().count("succeeded in")


def run_variant(name: str, *, model_root: Path, files: int, args) -> dict:
    import psycopg

    work = Path(tempfile.mkdtemp(prefix=f"modelxref-bench-regscale-{name}-"))
    load_before = os.getloadavg()
    with services() as (database_url, redis_url):
        env = host_env(database_url=database_url, redis_url=redis_url, data_dir=work / "data", roots=model_root)
        manage(env, "migrate", "--noinput")
        manage(env, "ensure_admin")
        workers = start_variant(name, database_url=database_url, redis_url=redis_url, work=work, model_root=model_root)
        try:
            wait_ready(workers)
            started = time.time()
            reg = register(env, model_root)
            with psycopg.connect(database_url.replace("postgres://", "postgresql://"), autocommit=True) as conn:
                seen = (watch(conn, expected=files, started=started, timeout=args.timeout, stall=args.stall) if workers
                        else {"counts": status_counts(conn), "done_at": reg["ended_at"], "complete": True})
                result = checks(conn, expected=files)
            load_after = os.getloadavg()
        finally:
            stop_workers(workers)
        tasks = {w.name: task_count(w) for w in workers}
    shutil.rmtree(work, ignore_errors=True)
    wall = seen["done_at"] - started
    if not workers:  # nothing hashes: every row must be queued, and that is not "stuck"
        result["stuck"] = files - seen["counts"].get("queued", 0)
    return {"name": name, "files": files, "register": reg, "wall": wall, "hash_files_per_second": files / wall,
            "register_files_per_second": files / reg["seconds"], "complete": seen["complete"], "counts": seen["counts"],
            "tasks": tasks, "load_before": load_before, "load_after": load_after, **result}


def verdict(r: dict) -> bool:
    return r["complete"] and not r["lost"] and not r["duplicated"] and not r["stuck"] and not r["errors"]


def report_lines(results: list[dict], *, copies: int) -> list[str]:
    lines = [
        f"{results[0]['files']:,} files of {PAYLOAD_BYTES + 80} bytes in folders of {PER_FOLDER:,}, {copies:,} of them byte "
        f"copies of another; Redis + PostgreSQL, Civitai off; `nice`d; {datetime.date.today().isoformat()}, 2 cores "
        "shared with other jobs (load average 1 min before / after each run below).",
        "",
        "| variant | register | register peak RSS | all hashed + analysed | lost / duplicated / stuck / error rows | tasks run | load |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if r["name"] == "register-only":
            lines.append(
                f"| register only (no worker) | {r['register']['seconds']:.1f} s ({r['register_files_per_second']:,.0f} "
                f"files/s) | {r['register']['peak_rss_mib']:.0f} MiB | — | {r['lost']} / {r['duplicated']} / "
                f"{r['stuck']} (not queued) / 0 | — | {r['load_before'][0]:.1f} / {r['load_after'][0]:.1f} |")
            continue
        lines.append(
            f"| {r['name']} | {r['register']['seconds']:.1f} s ({r['register_files_per_second']:,.0f} files/s) "
            f"| {r['register']['peak_rss_mib']:.0f} MiB | {r['wall']:.1f} s ({r['hash_files_per_second']:,.0f} files/s)"
            f"{'' if r['complete'] else ' INCOMPLETE'} | {r['lost']} / {r['duplicated']} / {r['stuck']} / "
            f"{sum(c for _, c in r['errors'])} | {', '.join(f'{k} {v:,}' for k, v in r['tasks'].items())} "
            f"| {r['load_before'][0]:.1f} / {r['load_after'][0]:.1f} |")
    lines.append("")
    lines.append("Hashing time counts from the start of `register` (workers start on the first committed chunk).")
    return lines


def write_docs(lines: list[str]) -> None:
    docs = ROOT / "docs" / "BENCHMARKS.md"
    text = docs.read_text()
    body = "\n".join([SECTION, "", "`nice .venv/bin/python bench/register_scale.py --write-docs` (issue #14).", "",
                      *lines]) + "\n"
    if SECTION in text:
        head, _, rest = text.partition(SECTION)
        nxt = rest.find("\n## ")
        text = head + body + (rest[nxt:] if nxt >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + body
    docs.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--variants", default="one-host,two-hosts")
    parser.add_argument("--timeout", type=float, default=3 * 3600, help="give up on a variant after this long")
    parser.add_argument("--stall", type=float, default=300, help="stuck: nothing changed for this long")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    library = Path(tempfile.mkdtemp(prefix="modelxref-bench-regscale-models-")) / "models"
    t0 = time.time()
    copies = write_library(library, args.files)
    print(f"{args.files:,} files written in {time.time() - t0:.1f} s under {library}", flush=True)
    results = []
    try:
        for name in args.variants.split(","):
            r = run_variant(name, model_root=library, files=args.files, args=args)
            results.append(r)
            print(f"{name}: {r['register']['output']}; register {r['register']['seconds']:.1f} s, peak RSS "
                  f"{r['register']['peak_rss_mib']:.0f} MiB; hashed in {r['wall']:.1f} s; {r['counts']}; "
                  f"lost {r['lost']}, duplicated {r['duplicated']}, stuck {r['stuck']}, errors {r['errors']}; "
                  f"{r['hashed']:,} hashed, {r['distinct_sha256']:,} distinct sha256; tasks {r['tasks']}; "
                  f"load {r['load_before']} -> {r['load_after']}", flush=True)
    finally:
        shutil.rmtree(library.parent, ignore_errors=True)
    lines = report_lines(results, copies=copies)
    print("\n".join(lines))
    if args.write_docs:
        write_docs(lines)
    return 0 if all(verdict(r) for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
