"""Nothing stuck, nothing lost (issue #9) with real processes: a worker killed whole in the middle of a
hash, on Redis + PostgreSQL and on the embedded defaults (file broker + SQLite), and a Redis that stops
and comes back while the CLI, the REST API and the web pages are used.

The reaper's bounds are shrunk from minutes to seconds through the settings meant for it
(MODELXREF_HEARTBEAT_SECONDS and friends, config/settings.py); the hash engine is slowed with its
test-only pace (MODELXREF_TEST_HASH_BYTES_PER_SECOND, workers/hashing.py) so that the kill lands
while the file is being read. Every wait has a deadline and says what it saw, with the workers' logs.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import random
import re
import shutil
import socket
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import requests

from tests.model_builders import write_safetensors
from tests.e2e.conftest import _reachable, _unavailable, manage
from tests.procfile import Worker, kill_whole, start_procfile_process, start_procfile_workers, stop_workers
from workers.hashing import TEST_PACE_ENV

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024
# A dead worker's row is queued again 4 s after its last heartbeat (beats every second), the reaper runs
# every second, and a row whose message never reached the broker is sent after a second.
FAST_REAPER = {
    "MODELXREF_HEARTBEAT_SECONDS": "1",
    "MODELXREF_STALLED_AFTER_SECONDS": "4",
    "MODELXREF_REAP_EVERY_SECONDS": "1",
    "MODELXREF_UNSENT_AFTER_SECONDS": "1",
}
BIG_FILE_BYTES = 32 * MiB
HASH_PACE = 10 * MiB  # bytes per second: one read of the big file takes ~3 s
# Worker start (~3 s) + STALLED_AFTER + a reaper run + a slow hash (~3 s) + reading tensors, with room for a
# loaded CI machine. Without the reaper the file would stay "hashing" for ever.
RECOVERED_WITHIN = 40.0
LIB_FILES = 27


# --- the database as the workers see it ---------------------------------------------------------------

class Rows:
    """Reads LocalFile rows straight from the app's database (PostgreSQL, or the embedded SQLite file)."""

    SQL = ("SELECT f.id, f.path, f.origin, f.status, f.error, f.bytes_done, f.stage_attempts, f.enqueued_at, "
           "h.sha256 FROM models_catalog_localfile f "
           "LEFT JOIN models_catalog_filehashes h ON h.local_file_id = f.id WHERE f.path LIKE {mark}")

    def __init__(self, env: dict):
        url = env.get("DATABASE_URL")
        if url:
            import psycopg

            self.conn = psycopg.connect(url.replace("postgres://", "postgresql://", 1), autocommit=True)
            self.sql = self.SQL.format(mark="%s")
        else:
            self.conn = sqlite3.connect(Path(env["MODELXREF_DATA_DIR"]) / "db.sqlite3", timeout=30,
                                        isolation_level=None)
            self.sql = self.SQL.format(mark="?")

    def under(self, folder: Path) -> dict[str, dict]:
        """Every row whose path lies under `folder` (this test's own files: the database is shared), by name."""
        cur = self.conn.execute(self.sql, (f"{folder}/%",))
        names = [c[0] for c in cur.description]
        return {Path(r["path"]).name: r for r in (dict(zip(names, row)) for row in cur.fetchall())}

    def close(self):
        self.conn.close()


@contextlib.contextmanager
def rows_of(env: dict):
    rows = Rows(env)
    try:
        yield rows
    finally:
        rows.close()


def wait_for(what: str, check, *, timeout: float, logs=(), poll: float = 0.1):
    """check() returns (finished, what it saw); wait until finished, fail after `timeout` saying what it saw last."""
    deadline = time.monotonic() + timeout
    while True:
        finished, value = check()
        if finished:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:.0f} s; last seen: {value!r}\n{_logs(logs)}", pytrace=False)
        time.sleep(poll)


def _logs(workers: list[Worker], tail: int = 6000) -> str:
    return "\n".join(f"--- {w.name} (last {tail} chars of {w.log}) ---\n{w.log_text()[-tail:]}" for w in workers)


def _prepare(env: dict, *, admin: bool = True) -> None:
    for args in (("migrate", "--noinput"), ("ensure_admin",))[:2 if admin else 1]:
        done = manage(env, *args)
        assert done.returncode == 0, done.stdout + done.stderr


def _model(path: Path, size: int, seed: int) -> tuple[Path, str]:
    """A safetensors file of about `size` bytes and its SHA256."""
    write_safetensors(path, payload=random.Random(seed).randbytes(size))
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


# --- 1 and 2: kill -9 of whole workers in the middle of a hash -------------------------------------------

def _killed_mid_hash_then_recovered(env: dict, tmp_path: Path, *, kill: tuple[str, ...]) -> dict:
    """Register a big file, kill -9 the `kill` workers (each with every process it started) while it is being
    hashed, start fresh ones, and return the row once it is done."""
    root = Path(env["MODELXREF_MODEL_ROOTS"])
    big, sha256 = _model(root / "big.safetensors", BIG_FILE_BYTES, seed=1)
    worker_env = {**env, TEST_PACE_ENV: str(HASH_PACE)}  # the workers only: the CLI hashes nothing here
    _prepare(env)
    (tmp_path / "before").mkdir()
    (tmp_path / "after").mkdir()
    workers = start_procfile_workers(worker_env, tmp_path / "before")
    try:
        done = manage(env, "register", str(big))
        assert done.returncode == 0 and "1 queued" in done.stdout, done.stdout + done.stderr
        with rows_of(env) as rows:
            def mid_hash():
                row = rows.under(root).get(big.name)
                return bool(row and row["status"] == "hashing" and row["bytes_done"]), row

            mid = wait_for("the big file being hashed", mid_hash, timeout=30, logs=workers)
            victims = [w for w in workers if w.name in kill]
            for worker in victims:
                kill_whole(worker)  # also checks that no process of its session survived
            killed_at = time.monotonic()
            after_kill = rows.under(root)[big.name]
            assert after_kill["status"] == "hashing" and 0 < after_kill["bytes_done"] < BIG_FILE_BYTES, \
                f"the kill did not land mid-hash: {after_kill}"

            workers = [w for w in workers if w not in victims]
            workers += start_procfile_workers(worker_env, tmp_path / "after", only=kill)
            def finished():
                row = rows.under(root)[big.name]
                return row["status"] in ("done", "error"), row

            row = wait_for("the killed worker's file hashed by the fresh worker", finished,
                           timeout=RECOVERED_WITHIN, logs=workers)
            recovered_in = time.monotonic() - killed_at
        assert row["status"] == "done", f"{row}\n{_logs(workers)}"
        assert row["sha256"] == sha256, row
        # Queued again once by the reaper (stale heartbeat), not left for the 30-minute redelivery.
        assert row["stage_attempts"] == 1, row
        assert "reaper: 1 requeued" in "".join(w.log_text() for w in workers), _logs(workers)
        return {"mid_hash": mid, "recovered_in": recovered_in, "workers": workers}
    finally:
        stop_workers(workers)


def test_kill_9_of_the_hashing_worker_mid_hash_on_redis_and_postgresql(e2e_env, tmp_path):
    env = {**e2e_env, **FAST_REAPER}
    out = _killed_mid_hash_then_recovered(env, tmp_path, kill=("hashing",))
    print(f"recovered {out['recovered_in']:.1f} s after the kill")


def test_kill_9_of_every_worker_mid_hash_on_the_embedded_file_broker_and_sqlite(tmp_path):
    """`make run`'s defaults: no DATABASE_URL, no REDIS_URL. The file broker drops the message a dead worker
    had taken, so only the reaper brings the file back."""
    roots = tmp_path / "models"
    roots.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(FAST_REAPER, MODELXREF_DATA_DIR=str(tmp_path / "data"), MODELXREF_MODEL_ROOTS=str(roots),
               DJANGO_SETTINGS_MODULE="config.settings", PYTHONUNBUFFERED="1")
    out = _killed_mid_hash_then_recovered(env, tmp_path, kill=("hashing", "lookups"))
    log = "".join(w.log_text() for w in out["workers"])
    assert re.search(r"transport: +modelxref-filesystem://", log), "the workers did not run on the embedded file broker"
    assert (tmp_path / "data" / "broker" / "queue").is_dir() and (tmp_path / "data" / "db.sqlite3").is_file()
    print(f"recovered {out['recovered_in']:.1f} s after the kill")


# --- 3: Redis stops, everyone keeps answering, and nothing is lost when it is back ------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A redis-server of the test's own, on a free port, stopped and started again on that same port."""

    def __init__(self, binary: str, workdir: Path):
        self.binary, self.workdir, self.port = binary, workdir, _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen([self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--daemonize", "no", "--dir", str(self.workdir)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not _reachable(self.url):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.05)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        assert not _reachable(self.url)


@pytest.fixture
def own_redis(tmp_path):
    binary = shutil.which("redis-server")
    if binary is None:
        _unavailable("redis-server (to stop and start a Redis of the test's own)")
    workdir = tmp_path / "redis"
    workdir.mkdir()
    server = RedisServer(binary, workdir)
    server.start()
    yield server
    server.stop()


def _web_server(env: dict, log_dir: Path, port: int) -> tuple[Worker, str]:
    """The Procfile's web line (gunicorn), answering on 127.0.0.1:port."""
    web = start_procfile_process("web", {**env, "HOST": "127.0.0.1", "PORT": str(port)}, log_dir)
    base = f"http://127.0.0.1:{port}"

    def answers():
        if web.proc.poll() is not None:
            pytest.fail(f"the web server stopped:\n{web.log_text()}", pytrace=False)
        try:
            status = requests.get(f"{base}/accounts/login/", timeout=5).status_code
        except requests.RequestException as exc:
            return False, exc
        return status == 200, status

    wait_for("the web server answering", answers, timeout=60, logs=[web], poll=0.2)
    return web, base


def _csrf(session: requests.Session, url: str) -> str:
    page = session.get(url, timeout=10)
    assert page.status_code == 200, page.text[:500]
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)


def test_redis_outage_loses_nothing_and_everything_is_hashed_once_it_is_back(e2e_database_url, own_redis, tmp_path):
    roots = tmp_path / "models"
    (roots / "lib").mkdir(parents=True)
    env = {**os.environ, **FAST_REAPER, "DATABASE_URL": e2e_database_url, "REDIS_URL": own_redis.url,
           "MODELXREF_DATA_DIR": str(tmp_path / "data"), "MODELXREF_MODEL_ROOTS": str(roots),
           "DJANGO_SETTINGS_MODULE": "config.settings", "PYTHONUNBUFFERED": "1"}
    # More files than one hashing message takes (CHUNK_MAX_FILES): every chunk must be kept, not only the first.
    expected = dict(_model(roots / "lib" / f"m{i:02}.safetensors", 4096 + i, seed=10 + i) for i in range(LIB_FILES))
    api_file, api_sha = _model(roots / "api.safetensors", 5000, seed=20)
    upload_src, upload_sha = _model(tmp_path / "upload-src.safetensors", 6000, seed=30)
    uploads = tmp_path / "data" / "uploads"

    _prepare(env, admin=False)
    user, password = f"faults-{os.getpid()}-{time.monotonic_ns()}", "pw-faults-outage-1"
    # A user of this test's own (the database is shared by the e2e tests, so `admin` may be someone else's).
    made = manage({**env, "DJANGO_SUPERUSER_PASSWORD": password}, "createsuperuser", "--noinput", "--username", user,
                  "--email", "")
    assert made.returncode == 0, made.stdout + made.stderr
    (tmp_path / "logs").mkdir()
    web, base = _web_server(env, tmp_path / "logs", _free_port())
    workers = []
    try:
        api = requests.Session()
        token = api.post(f"{base}/api/v1/auth/token/", json={"username": user, "password": password}, timeout=10)
        assert token.status_code == 200, token.text
        api.headers["Authorization"] = f"Token {token.json()['token']}"
        browser = requests.Session()
        login = browser.post(f"{base}/accounts/login/", data={
            "username": user, "password": password, "csrfmiddlewaretoken": _csrf(browser, f"{base}/accounts/login/")},
            timeout=10, allow_redirects=False)
        assert login.status_code == 302, login.text[:500]
        upload_csrf = _csrf(browser, f"{base}/upload/")

        own_redis.stop()

        # The CLI: a clear one-line error and a failure status, no traceback; the rows are kept.
        cli = manage(env, "register", str(roots / "lib"), "--user", user, timeout=60)
        assert cli.returncode != 0, cli.stdout + cli.stderr
        assert "Traceback" not in cli.stderr and len(cli.stderr.strip().splitlines()) == 1, cli.stderr
        assert f"{LIB_FILES} queued" in cli.stdout, cli.stdout + cli.stderr
        assert "task queue is unreachable" in cli.stderr and f"{LIB_FILES} file(s) stay queued" in cli.stderr, \
            cli.stderr

        # The API: 503 in its error format for work it cannot queue, answers as usual for the rest.
        started = time.monotonic()
        resp = api.post(f"{base}/api/v1/files/register/", json={"paths": [str(api_file)]}, timeout=30)
        assert resp.status_code == 503, resp.text
        assert resp.headers["Retry-After"] == "30"
        error = resp.json()["error"]
        assert error["code"] == "service_unavailable" and "kept" in error["message"] and "detail" in error, error
        listing = api.get(f"{base}/api/v1/files/", timeout=30)
        assert listing.status_code == 200, listing.text[:2000]
        assert time.monotonic() - started < 20, "a Redis that does not answer must not hold the API"

        # The web page: the upload is stored, and its page says it waits for the queue (not "try again").
        page = browser.post(f"{base}/upload/", data={"csrfmiddlewaretoken": upload_csrf},
                            files={"file": ("uploaded.safetensors", upload_src.read_bytes())}, timeout=30)
        assert page.status_code == 200 and re.search(r"/files/\d+/$", page.url), (page.status_code, page.text[:3000])
        assert "Uploaded uploaded.safetensors, but the task queue is unreachable" in page.text, page.text[:3000]
        assert "waiting for the queue" in page.text, page.text[:3000]
        my_files = browser.get(f"{base}/", timeout=30)
        assert my_files.status_code == 200 and "waiting for the queue" in my_files.text, my_files.text[:3000]

        with rows_of(env) as rows:
            mine = {**rows.under(roots), **rows.under(uploads)}
            assert set(mine) == {*(p.name for p in expected), "api.safetensors", "uploaded.safetensors"}, mine
            for name, row in mine.items():
                assert row["status"] == "queued" and row["enqueued_at"] is None, row
                assert "waiting for the queue" in row["error"], row
            listed = {f["name"]: f for f in api.get(f"{base}/api/v1/files/", timeout=30).json()["results"]}
            assert "waiting for the queue" in listed["uploaded.safetensors"]["error"], listed

            # Redis is back, the workers start: the reaper sends every waiting row, nobody runs anything.
            own_redis.start()
            (tmp_path / "workers").mkdir()
            workers = start_procfile_workers(env, tmp_path / "workers")
            def all_finished():
                now = {**rows.under(roots), **rows.under(uploads)}
                return all(r["status"] in ("done", "error") for r in now.values()), now

            final = wait_for("every file kept during the outage hashed once Redis is back", all_finished,
                             timeout=RECOVERED_WITHIN, logs=[*workers, web])
        want = {**{p.name: sha for p, sha in expected.items()}, "api.safetensors": api_sha,
                "uploaded.safetensors": upload_sha}
        assert {name: (r["status"], r["sha256"]) for name, r in final.items()} == \
            {name: ("done", sha) for name, sha in want.items()}, _logs([*workers, web])
        assert "messages (re)sent" in "".join(w.log_text() for w in workers), _logs(workers)
    finally:
        stop_workers([*workers, web])
