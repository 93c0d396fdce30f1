"""The load test's short mode: 10,000 files on PostgreSQL, 10 locust clients for ~30 s against gunicorn with
the production settings; every request must succeed (the p95s are printed; the long mode, bench/load/run.py
at 1M files and 50 clients, is the benchmark with the latency targets)."""
from __future__ import annotations

import os
import secrets
import subprocess
import sys
from urllib.parse import urlparse

import pytest

from tests.e2e.conftest import DEFAULT_DB, ROOT, _reachable, _unavailable

pytestmark = pytest.mark.e2e

sys.path.insert(0, str(ROOT / "bench" / "load"))
import run as load_run  # noqa: E402  (bench/load/run.py)


@pytest.fixture
def load_database(tmp_path):
    base = os.environ.get("E2E_DATABASE_URL", DEFAULT_DB)
    if not _reachable(base):
        _unavailable(f"PostgreSQL at {base}")
    import psycopg

    url = urlparse(base)._replace(path=f"/modelxref_load_ci_{secrets.token_hex(4)}").geturl()
    yield url
    with psycopg.connect(base.replace("postgres://", "postgresql://"), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{urlparse(url).path[1:]}" WITH (FORCE)')


def test_ten_clients_for_thirty_seconds_get_no_error(load_database, e2e_redis_url, tmp_path, capsys):
    credentials = tmp_path / "credentials.json"
    subprocess.run([sys.executable, str(ROOT / "bench" / "load" / "generate.py"), "--files", "10000",
                    "--postgres", load_database, "--credentials", str(credentials),
                    "--data-dir", str(tmp_path / "gen-data")], cwd=ROOT, check=True, timeout=300,
                   capture_output=True)
    result = load_run.run(users=10, run_time=30, max_requests=5000, database_url=load_database,
                          redis_url=e2e_redis_url, credentials=credentials)
    with capsys.disabled():
        print()
        load_run.print_table(result)
    rows = {r["name"]: r for r in result["rows"]}
    assert rows["Aggregated"]["requests"] >= 50, "the clients barely ran: see " + result["work"]
    # Every kind of request was made (a task that silently stopped would hide its errors).
    assert len(rows) - 1 == 17, sorted(rows)
    assert rows["Aggregated"]["failures"] == 0, result["failures_csv"]
