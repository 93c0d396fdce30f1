"""Load test: gunicorn with the production settings on 127.0.0.1, locust headless against it, p95s vs targets.

Needs a database filled by bench/load/generate.py (and its credentials file). Starts gunicorn as the
Procfile does (2 workers x 4 threads) with README's production settings (MODELXREF_DEV=false, a secret
key, secure cookies, SSL redirect behind X-Forwarded-Proto, HSTS) and REDIS_URL for the cache and throttles,
runs locust for --run-time or --max-requests, whichever comes first, and prints each request's p50/p95/max
with the targets (lookups p95 < 50 ms, lists/searches/duplicates p95 < 150 ms, no error).

    .venv/bin/python bench/load/run.py [--users 50] [--run-time 120] [--max-requests 20000]
        [--postgres postgres://postgres@127.0.0.1:5432/modelxref_load] [--redis redis://127.0.0.1:6379/10]
        [--hashing-files N [--hashing-mb 256] [--hashing-processes 1] [--hashing-nice 0]]  # a worker hashing meanwhile
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import hashing_meanwhile
from proc_cpu import all_process_stats

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = ROOT / ".venv" / "bin"
LOOKUP_P95_MS, LIST_P95_MS = 50, 150


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def production_env(*, database_url: str, redis_url: str, data_dir: Path) -> dict:
    env = dict(os.environ)
    env.update({
        "DATABASE_URL": database_url, "REDIS_URL": redis_url, "MODELXREF_DATA_DIR": str(data_dir),
        "CIVITAI_ENABLED": "false",  # lookups answer from the local catalog: we measure ModelXRef, not Civitai
        # README "Settings", the production block:
        "MODELXREF_DEV": "false", "SECRET_KEY": secrets.token_urlsafe(50), "ALLOWED_HOSTS": "127.0.0.1",
        "SESSION_COOKIE_SECURE": "true", "CSRF_COOKIE_SECURE": "true", "SECURE_SSL_REDIRECT": "true",
        "SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto", "SECURE_HSTS_SECONDS": "31536000",
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": "true", "SECURE_HSTS_PRELOAD": "true",
        # 100 users asking ~10 lookups a minute each would hit the default 600/hour lookup throttle, which
        # is a policy, not a capacity: raised so that a 429 means something else.
        "API_THROTTLE_LOOKUP": "1000000/hour", "API_THROTTLE_USER": "1000000/hour",
        "DEBUG": "false",
    })
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return env


SESSIONS_SCRIPT = """
import json, sys
from django.contrib.auth import get_user_model
from django.contrib.sessions.backends.db import SessionStore
out = {}
for user in get_user_model().objects.filter(username__in=json.loads(sys.stdin.read())):
    s = SessionStore()
    s.update({"_auth_user_id": str(user.pk), "_auth_user_backend": "django.contrib.auth.backends.ModelBackend",
              "_auth_user_hash": user.get_session_auth_hash()})
    s.create()
    out[user.username] = s.session_key
print(json.dumps(out))
"""


def make_sessions(env: dict, credentials: Path, out: Path) -> None:
    """A logged-in session per user, made under the server's own SECRET_KEY (the auth hash depends on it)."""
    data = json.loads(credentials.read_text())
    names = [u["username"] for u in data["users"]]
    done = subprocess.run([str(VENV_BIN / "python"), "manage.py", "shell", "-c", SESSIONS_SCRIPT], cwd=ROOT,
                          env=env, input=json.dumps(names), capture_output=True, text=True, check=True)
    sessions = json.loads(done.stdout.strip().splitlines()[-1])
    for u in data["users"]:
        u["session"] = sessions[u["username"]]
    out.write_text(json.dumps(data))


def clear_cache(redis_url: str) -> None:
    """Every run starts from a cold cache: each user's first duplicates view is computed, as it would be the
    first time, and not served from the previous run's entries (they live 300 s). Deletes only the Django
    cache's keys (":1:..."), not a broker's."""
    import redis

    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=":1:*", count=1000))
    if keys:
        client.delete(*keys)


def start_gunicorn(env: dict, port: int, log: Path, *, workers: int = 2, threads: int = 4) -> subprocess.Popen:
    # The Procfile's web line (its workers and threads unless asked otherwise), on a port of our own.
    cmd = [str(VENV_BIN / "gunicorn"), "config.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", str(workers),
           "--threads", str(threads), "--timeout", "3600"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited ({proc.returncode}): {log.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/lookup/",
                                                          headers={"X-Forwarded-Proto": "https"}), timeout=2)
        except urllib.error.HTTPError:
            return proc  # any HTTP answer (401 without a token) means it serves
        except OSError:
            time.sleep(0.3)
            continue
        return proc
    proc.kill()
    raise RuntimeError("gunicorn did not answer within 60 s")


class CpuMeter:
    """CPU seconds used during the run by gunicorn (master and workers), PostgreSQL (every postgres process)
    and locust. CPU time, unlike wall time, leaves out what a busy host steals from this VM: divided by
    the requests served it is what a request costs, comparable between runs. Read each second: a process
    that ends during the run (a PostgreSQL backend whose connection reached CONN_MAX_AGE, locust itself)
    keeps what it had used by its last reading."""

    def __init__(self, gunicorn_pid: int):
        self.gunicorn_pid = gunicorn_pid
        self.start = {pid: cpu for pid, (_, _, cpu) in all_process_stats().items()}
        self.last: dict[int, tuple[str, float]] = {}

    def _part(self, pid: int, command: str, ppid: int) -> str | None:
        if pid == self.gunicorn_pid or ppid == self.gunicorn_pid:
            return "gunicorn"
        return next((p for p in ("postgres", "locust") if command.startswith(p)), None)

    def read(self) -> None:
        for pid, (command, ppid, cpu) in all_process_stats().items():
            part = self._part(pid, command, ppid)
            if part:
                self.last[pid] = (part, cpu)

    def seconds(self) -> dict[str, float]:
        parts = {"gunicorn": 0.0, "postgres": 0.0, "locust": 0.0}
        for pid, (part, cpu) in self.last.items():
            parts[part] += cpu - self.start.get(pid, 0.0)  # a process born during the run started at 0
        return parts


def target_of(name: str) -> int | None:
    if name.startswith("lookup"):
        return LOOKUP_P95_MS
    if any(w in name for w in ("list", "filter", "search", "duplicates", "my files")):
        return LIST_P95_MS
    return None  # file detail: measured, no target in the issue


def run(*, users: int, run_time: int, max_requests: int, database_url: str, redis_url: str,
        credentials: Path, spawn_rate: float = 10.0, workers: int = 2, threads: int = 4,
        hashing_files: int = 0, hashing_mb: int = 256, hashing_processes: int = 1, hashing_nice: int = 0) -> dict:
    work = Path(tempfile.mkdtemp(prefix="modelxref-load-"))
    (work / "data").mkdir()
    port = free_port()
    env = production_env(database_url=database_url, redis_url=redis_url, data_dir=work / "data")
    models = work / "models"
    if hashing_files:
        env["MODELXREF_MODEL_ROOTS"] = str(models)
        hashing_meanwhile.write_model_files(models, count=hashing_files, megabytes=hashing_mb)
    make_sessions(env, credentials, work / "credentials.json")
    clear_cache(redis_url)
    gunicorn = start_gunicorn(env, port, work / "gunicorn.log", workers=workers, threads=threads)
    worker, hashing, revision_before = None, {}, None
    try:
        if hashing_files:
            worker = hashing_meanwhile.start_worker(VENV_BIN, ROOT, env, work / "worker.log",
                                                    processes=hashing_processes, nice=hashing_nice)
            owner = json.loads(credentials.read_text())["users"][0]["username"]
            hashing_meanwhile.register(VENV_BIN, ROOT, env, models, user=owner)
            revision_before = hashing_meanwhile.revision(redis_url)
        load_env = dict(os.environ, LOAD_CREDENTIALS=str(work / "credentials.json"), LOAD_MAX_REQUESTS=str(max_requests))
        started = time.time()
        load1 = os.getloadavg()[0]
        cpu = CpuMeter(gunicorn.pid)
        locust = subprocess.Popen([str(VENV_BIN / "locust"), "-f", str(Path(__file__).with_name("locustfile.py")),
                        "--headless", "--host", f"http://127.0.0.1:{port}", "--users", str(users),
                        "--spawn-rate", str(spawn_rate), "--run-time", f"{run_time}s", "--csv",
                        str(work / "stats"), "--only-summary", "--loglevel", "WARNING", "--stop-timeout", "5"],
                       cwd=ROOT, env=load_env, stdout=subprocess.DEVNULL, stderr=(work / "locust.log").open("wb"))
        while locust.poll() is None and time.time() - started < run_time + 120:
            cpu.read()
            time.sleep(1)
        if locust.poll() is None:
            locust.kill()
        wall = time.time() - started
        if worker is not None:
            after = hashing_meanwhile.revision(redis_url)
            hashing["revision_moves"] = after - revision_before if None not in (after, revision_before) else None
    finally:
        gunicorn.terminate()
        gunicorn.wait(timeout=30)
        if worker is not None:
            hashing.update(hashing_meanwhile.finish(VENV_BIN, ROOT, env, models, worker, redis_url),
                           files=hashing_files, megabytes=hashing_mb)
    rows = []
    with (work / "stats_stats.csv").open() as f:
        for r in csv.DictReader(f):
            rows.append({"name": r["Name"], "requests": int(r["Request Count"]), "failures": int(r["Failure Count"]),
                         "p50": float(r["50%"] or 0), "p95": float(r["95%"] or 0), "max": float(r["Max Response Time"] or 0),
                         "rps": float(r["Requests/s"] or 0), "target": target_of(r["Name"])})
    served = next((r["requests"] for r in rows if r["name"] == "Aggregated"), 0)
    cpu_ms = {part: seconds * 1000 / served if served else 0.0 for part, seconds in cpu.seconds().items()}
    failures = (work / "stats_failures.csv").read_text() if (work / "stats_failures.csv").exists() else ""
    return {"rows": rows, "wall": wall, "load_before": load1, "load_after": os.getloadavg()[0], "users": users,
            "gunicorn": f"{workers} workers x {threads} threads", "cpu_ms_per_request": cpu_ms,
            "failures_csv": failures, "work": str(work), "hashing": hashing}


def print_table(result: dict) -> None:
    print(f"{result['users']} clients, gunicorn {result['gunicorn']}, {result['wall']:.0f} s, load average {result['load_before']:.1f} -> "
          f"{result['load_after']:.1f}")
    hashing = result.get("hashing")
    if hashing:
        print(f"Meanwhile a worker hashed {hashing['files_done']} of {hashing['files']} files of {hashing['megabytes']} MB "
              f"({hashing['files_ended']} ended); the library revision moved {hashing['revision_moves']} times")
    cpu = result["cpu_ms_per_request"]
    print(f"CPU a request: gunicorn {cpu['gunicorn']:.1f} ms, PostgreSQL {cpu['postgres']:.1f} ms, locust "
          f"{cpu['locust']:.1f} ms (CPU time of the processes over the run, divided by the requests served)")
    print("| request | requests | errors | p50 ms | p95 ms | max ms | target p95 | |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for r in result["rows"]:
        t = r["target"]
        verdict = "" if t is None or r["name"] == "Aggregated" else ("met" if r["p95"] < t else "MISSED")
        print(f"| {r['name']} | {r['requests']:,} | {r['failures']} | {r['p50']:.0f} | {r['p95']:.0f} | "
              f"{r['max']:.0f} | {'< %d' % t if t else ''} | {verdict} |")
    if result["failures_csv"].strip().count("\n"):
        print(result["failures_csv"][:3000])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=50)
    ap.add_argument("--run-time", type=int, default=120)
    ap.add_argument("--max-requests", type=int, default=20000)
    ap.add_argument("--postgres", default="postgres://postgres@127.0.0.1:5432/modelxref_load")
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/10")
    ap.add_argument("--credentials", type=Path, default=ROOT / "bench" / "out" / "load-credentials.json")
    ap.add_argument("--workers", type=int, default=2, help="gunicorn processes (default: the Procfile's)")
    ap.add_argument("--threads", type=int, default=4, help="threads per gunicorn process (default: the Procfile's)")
    ap.add_argument("--hashing-files", type=int, default=0,
                    help="meanwhile a celery worker hashes this many registered files (bench/load/hashing_meanwhile.py)")
    ap.add_argument("--hashing-mb", type=int, default=256, help="the size of each of those files")
    ap.add_argument("--hashing-processes", type=int, default=1, help="that worker's --concurrency")
    ap.add_argument("--hashing-nice", type=int, default=0, help="run that worker under nice -n N")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    result = run(users=args.users, run_time=args.run_time, max_requests=args.max_requests,
                 database_url=args.postgres, redis_url=args.redis, credentials=args.credentials,
                 workers=args.workers, threads=args.threads, hashing_files=args.hashing_files,
                 hashing_mb=args.hashing_mb, hashing_processes=args.hashing_processes,
                 hashing_nice=args.hashing_nice)
    print(json.dumps(result, indent=1) if args.json else "", end="")
    print_table(result)
    sys.exit(1 if any(r["failures"] for r in result["rows"]) else 0)


if __name__ == "__main__":
    main()
