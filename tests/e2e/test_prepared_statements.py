"""On PostgreSQL the app's connections prepare the queries they repeat (config/settings.py,
DATABASE_PREPARE_THRESHOLD): planning was half of PostgreSQL's work a lookup (docs/BENCHMARKS.md)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e

# The same query three times on the app's own connection, then what PostgreSQL holds prepared for it.
SCRIPT = """
from django.db import connection
with connection.cursor() as cursor:
    for n in range(3):
        cursor.execute("SELECT count(*) FROM pg_class WHERE relpages >= %s", [n])
    cursor.execute("SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE '%%relpages >= $1%%'")
    print("prepared", cursor.fetchone()[0])
"""


def _prepared(env: dict) -> int:
    done = subprocess.run([sys.executable, "manage.py", "shell", "-c", SCRIPT], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return int(done.stdout.split("prepared", 1)[1].split()[0])


def test_a_repeated_query_is_prepared_by_default(e2e_env):
    env = {k: v for k, v in e2e_env.items() if k != "DATABASE_PREPARE_THRESHOLD"}
    assert _prepared(env) == 1


def test_threshold_zero_turns_prepared_statements_off(e2e_env):
    assert _prepared({**e2e_env, "DATABASE_PREPARE_THRESHOLD": "0"}) == 0
