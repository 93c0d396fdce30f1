"""What `make run` starts with no setup: the filesystem broker, SQLite and the Procfile's workers."""
import sqlite3

import pytest
from django.conf import settings
from django.db import connections

from config.celery import app as celery_app
from tests.procfile import option, procfile_workers


def test_filesystem_broker_looks_for_work_often():
    # kombu's default (1 s) made each task wait about a second after the previous one.
    assert settings.CELERY_BROKER_URL.startswith("modelxref-filesystem://")
    with celery_app.connection_for_write() as conn:
        assert conn.transport.polling_interval == settings.FILESYSTEM_BROKER_POLL_SECONDS <= 0.2


def test_sqlite_database_runs_in_wal_with_normal_sync(tmp_path, django_db_blocker):
    # A connection made from the app's settings to a file of its own (the suite's database is in memory).
    config = {**connections.settings["default"], "NAME": str(tmp_path / "db.sqlite3")}
    wrapper = connections["default"].__class__(config, alias="speed-check")
    with django_db_blocker.unblock():
        with wrapper.cursor() as cursor:
            cursor.execute("PRAGMA journal_mode")
            assert cursor.fetchone()[0] == "wal"
            cursor.execute("PRAGMA synchronous")
            assert cursor.fetchone()[0] == 1  # NORMAL
        wrapper.close()
    # WAL is a property of the file: a plain client opening it later sees it too.
    with sqlite3.connect(tmp_path / "db.sqlite3") as plain:
        assert plain.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def _queues(command):
    return set((option(command, "-Q", "--queues") or "").split(","))


def test_procfile_runs_hashing_and_lookups_in_separate_workers():
    workers = procfile_workers()
    hashing = [cmd for cmd in workers.values() if _queues(cmd) == {"hashing"}]
    lookups = [cmd for cmd in workers.values() if _queues(cmd) == {"lookups"}]
    # A Civitai rate-limit wait on the lookups queue never holds a hashing process.
    assert len(hashing) == 1 and len(lookups) == 1 and len(workers) == 2
    assert [cmd for cmd in workers.values() if "--beat" in cmd.split()] == lookups  # exactly one scheduler
    names = [option(cmd, "-n", "--hostname") for cmd in workers.values()]
    assert None not in names and len(set(names)) == len(names)


@pytest.mark.parametrize("task", sorted(settings.CELERY_TASK_ROUTES))
def test_every_routed_task_has_a_procfile_worker(task):
    consumed = set().union(*(_queues(cmd) for cmd in procfile_workers().values()))
    assert settings.CELERY_TASK_ROUTES[task]["queue"] in consumed


def test_a_filesystem_message_appears_whole_or_not_at_all(tmp_path, monkeypatch):
    """kombu writes in place, so a consumer could move away an empty file and die parsing it; ours is
    written under a name no consumer takes, then renamed."""
    import os

    from kombu import Connection

    from config import filesystem_broker

    seen_during_write = []
    real_replace = os.replace

    def watching_replace(src, dst):
        seen_during_write.append(sorted(p.name for p in tmp_path.iterdir()))
        return real_replace(src, dst)

    monkeypatch.setattr(filesystem_broker.os, "replace", watching_replace)
    conn = Connection(f"{filesystem_broker.ALIAS}://localhost//", transport_options={
        "data_folder_in": str(tmp_path), "data_folder_out": str(tmp_path), "store_processed": False})
    channel = conn.default_channel
    channel._put("hashing", {"body": "x" * 10_000})
    [before] = seen_during_write
    assert all(name.startswith(".") and name.endswith(".part") for name in before)  # invisible to _get
    assert channel._get("hashing") == {"body": "x" * 10_000}
    conn.release()
