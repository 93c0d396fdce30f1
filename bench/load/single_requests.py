"""What one request costs alone on the load-test database (bench/load/generate.py): time, queries, slowest query.

The Django test client against the same PostgreSQL, one user of the generated library (load00 unless
--user), each request made twice and the second call measured (the first warms caches and connections);
--repeat N measures N calls and reports the median. Django is set up as gunicorn loads it (config.wsgi,
with its gc.freeze()) unless --no-gc-freeze. --explain prints EXPLAIN (ANALYZE, BUFFERS) of every
query of the selected requests that took at least --explain-ms.

    .venv/bin/python bench/load/single_requests.py [--only duplicates] [--explain] [--repeat 3]
        [--postgres postgres://postgres@127.0.0.1:5432/modelxref_load]
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from pathlib import Path

from proc_cpu import process_stat  # CPU of the PostgreSQL backend serving this connection

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/modelxref_load"

# (label, url, api?) as locustfile.py asks them
REQUESTS = (
    ("lookup SHA256", "/api/v1/lookup/?q={sha256}", True),
    ("API files list", "/api/v1/files/", True),
    ("API files filter dangerous", "/api/v1/files/?safety=dangerous", True),
    ("page My files", "/", False),
    ("page My files type=LORA", "/?type=LORA", False),
    ("API files search pony", "/api/v1/files/?search=pony", True),
    ("page My files search pony", "/?search=pony", False),
    ("API catalog search pony", "/api/v1/models/?search=pony", True),
    ("page catalog search pony", "/catalog/?q=pony", False),
    ("API duplicates", "/api/v1/duplicates/", True),
    ("API duplicates page 3", "/api/v1/duplicates/?page=3", True),
    ("page duplicates", "/duplicates/", False),
    ("page duplicates page 3", "/duplicates/?page=3", False),
    ("export duplicates CSV", "/duplicates/export.csv", False),
    ("API file detail", "/api/v1/files/{file_id}/", True),
    ("page file detail", "/files/{file_id}/", False),
)


def setup(url: str, *, gc_freeze: bool = True, redis_url: str = "") -> None:
    base, name = url.rsplit("/", 1)
    if name == "test":
        raise SystemExit("the load database is not `test`: give it the one generate.py made")
    os.environ.update({"DATABASE_URL": url, "CIVITAI_ENABLED": "false", "DJANGO_SETTINGS_MODULE": "config.settings",
                       "MODELXREF_DATA_DIR": str(ROOT / "bench" / "out" / "load-data")})
    os.environ.pop("REDIS_URL", None)
    if redis_url:  # as production runs: Redis cache (duplicate groups, throttle counters) and broker
        os.environ["REDIS_URL"] = redis_url
    sys.path.insert(0, str(ROOT))
    if gc_freeze:
        import config.wsgi  # noqa: F401  the app as gunicorn loads it (django.setup, the URLconf, gc.freeze)
    else:
        import django

        django.setup()


def profile(call, label: str, calls: int, *, by: str, only: str) -> None:
    """Where the Python time of a request goes: cProfile over `calls` calls, the functions of most own time
    (by="tottime") or of most time with their callees among those whose path matches `only`."""
    import cProfile
    import io
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(calls):
        call()
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    if by == "tottime":
        stats.sort_stats("tottime").print_stats(25)
    else:
        stats.sort_stats("cumulative").print_stats(only, 40)
    print(f"\n-- {label}: cProfile of {calls} calls, {stats.total_tt / calls * 1000:.1f} ms a call under the profiler\n"
          + out.getvalue().split("\n", 4)[-1], flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--postgres", default=DEFAULT_URL)
    ap.add_argument("--user", default="load00")
    ap.add_argument("--credentials", type=Path, default=ROOT / "bench" / "out" / "load-credentials.json")
    ap.add_argument("--only", default="", help="measure only the requests whose label contains one of these (comma-separated, case-insensitive)")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--explain", action="store_true")
    ap.add_argument("--no-gc-freeze", action="store_true",
                    help="set Django up without config.wsgi's gc.freeze() (as before 2026-12-03)")
    ap.add_argument("--explain-ms", type=float, default=20.0)
    ap.add_argument("--redis", default="", metavar="URL",
                    help="use this Redis as production does (cached duplicate groups, throttle counters); "
                         "without it the file cache is used and duplicates are computed every time")
    ap.add_argument("--profile", type=int, default=0, metavar="N",
                    help="after measuring, profile N more calls of each selected request (cProfile) and print "
                         "its 25 functions of most own time")
    ap.add_argument("--profile-by", default="tottime", choices=("tottime", "cumulative"),
                    help="own time, or time with callees (then only the functions whose path matches --profile-only)")
    ap.add_argument("--profile-only", default="models_catalog|rest_framework/(views|serializers)|django/template/(loader_tags|backends)",
                    metavar="REGEX")
    args = ap.parse_args()
    setup(args.postgres, gc_freeze=not args.no_gc_freeze, redis_url=args.redis)

    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from models_catalog.models import FileHashes, LocalFile

    user = get_user_model().objects.get(username=args.user)
    # generate.py stores only the tokens' digests; the keys are in its credentials file
    creds = json.loads(args.credentials.read_text())
    token = next(u["token"] for u in creds["users"] if u["username"] == args.user)
    any_file = LocalFile.objects.filter(owner=user).order_by("id").values_list("id", flat=True).first()
    sha256 = FileHashes.objects.filter(local_file_id=any_file).values_list("sha256", flat=True).first()
    page = Client()
    page.force_login(user)
    api = Client(headers={"Authorization": f"Token {token}"})

    print(f"user {args.user} ({LocalFile.objects.filter(owner=user).count()} files), {time.strftime('%Y-%m-%d %H:%M')}, "
          f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    gc_seconds = [0.0]
    gc_started = [0.0]

    def gc_timer(phase, info):  # the cyclic collector's pauses, which stop every thread of a worker
        if phase == "start":
            gc_started[0] = time.perf_counter()
        else:
            gc_seconds[0] += time.perf_counter() - gc_started[0]

    gc.callbacks.append(gc_timer)
    with connection.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        backend = cur.fetchone()[0]
    print("| request | time | CPU Python | CPU PostgreSQL | queries | in SQL | slowest query | gc pauses a call |\n"
          "|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, url, is_api in REQUESTS:
        if not any(part.strip().lower() in label.lower() for part in args.only.split(",")):
            continue
        url = url.format(sha256=sha256, file_id=any_file)
        client = api if is_api else page

        def call():
            response = client.get(url, secure=True)
            if getattr(response, "streaming", False):
                b"".join(response.streaming_content)
            assert response.status_code == 200, (label, response.status_code)

        call()
        times, captured = [], None
        gc_seconds[0] = 0.0
        cpu_started, pg_started = time.process_time(), process_stat(backend)[2]
        for _ in range(args.repeat):
            with CaptureQueriesContext(connection) as captured:
                t = time.perf_counter()
                call()
                times.append(time.perf_counter() - t)
        cpu = (time.process_time() - cpu_started) / args.repeat
        pg_cpu = (process_stat(backend)[2] - pg_started) / args.repeat
        slowest = max((float(q["time"]) for q in captured.captured_queries), default=0.0)
        in_sql = sum(float(q["time"]) for q in captured.captured_queries)  # the last call's; the rest is Python
        print(f"| {label} | {statistics.median(times) * 1000:,.0f} ms | {cpu * 1000:,.1f} ms | {pg_cpu * 1000:,.1f} ms | {len(captured.captured_queries)} | "
              f"{in_sql * 1000:,.0f} ms | {slowest * 1000:,.0f} ms | {gc_seconds[0] / args.repeat * 1000:,.1f} ms |", flush=True)
        if args.profile:
            profile(call, label, args.profile, by=args.profile_by, only=args.profile_only)
        if args.explain:
            for q in captured.captured_queries:
                if float(q["time"]) * 1000 < args.explain_ms or not q["sql"].lstrip().upper().startswith("SELECT"):
                    continue
                with connection.cursor() as cur:
                    cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + q["sql"])
                    plan = "\n".join(r[0] for r in cur.fetchall())
                print(f"\n-- {label}: {float(q['time']) * 1000:.0f} ms\n{q['sql'][:2000]}\n{plan}\n", flush=True)


if __name__ == "__main__":
    main()
