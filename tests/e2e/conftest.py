"""The end-to-end layer: real PostgreSQL, real Redis, a real `celery worker` process.

Locally these tests skip when the services are not reachable; under CI
(CI=true) a missing service is a failure, never a skip.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS = "redis://127.0.0.1:6379/14"


def _unavailable(what: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{what} is required for the end-to-end tests in CI", pytrace=False)
    pytest.skip(f"{what} not reachable")


def _reachable(url: str) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname, parsed.port), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def e2e_database_url():
    """A fresh PostgreSQL database for this run, dropped afterwards."""
    base = os.environ.get("E2E_DATABASE_URL", DEFAULT_DB)
    if not _reachable(base):
        _unavailable(f"PostgreSQL at {base}")
    import psycopg

    name = f"modelxref_e2e_{secrets.token_hex(4)}"
    admin = psycopg.connect(base.replace("postgres://", "postgresql://"), autocommit=True)
    admin.execute(f'CREATE DATABASE "{name}"')
    parsed = urlparse(base)
    yield parsed._replace(path=f"/{name}").geturl()
    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


@pytest.fixture(scope="session")
def e2e_redis_url():
    url = os.environ.get("E2E_REDIS_URL", DEFAULT_REDIS)
    if not _reachable(url):
        _unavailable(f"Redis at {url}")
    import redis

    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()


@pytest.fixture
def e2e_env(tmp_path, e2e_database_url, e2e_redis_url):
    roots = tmp_path / "models"
    roots.mkdir()
    env = {
        **os.environ,
        "DATABASE_URL": e2e_database_url,
        "REDIS_URL": e2e_redis_url,
        "MODELXREF_DATA_DIR": str(tmp_path / "data"),
        "MODELXREF_MODEL_ROOTS": str(roots),
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "PYTHONUNBUFFERED": "1",
    }
    return env


def manage(env: dict, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


@contextlib.contextmanager
def worker_running(env: dict, log_dir: Path):
    """Migrate, create the admin, start the Procfile's workers (as `make run` does); stop them afterwards.
    Yields the workers; their logs are in `log_dir`."""
    from tests.procfile import start_procfile_workers, stop_workers

    for args in (("migrate", "--noinput"), ("ensure_admin",)):
        done = manage(env, *args)
        assert done.returncode == 0, done.stderr
    try:
        workers = start_procfile_workers(env, log_dir)
    except RuntimeError as exc:
        pytest.fail(str(exc))
    try:
        yield workers
    finally:
        stop_workers(workers)


@pytest.fixture
def celery_worker_process(e2e_env, tmp_path):
    with worker_running(e2e_env, tmp_path) as workers:
        yield workers
