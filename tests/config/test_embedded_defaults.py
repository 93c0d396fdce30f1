"""What `make run` starts with no setup: the filesystem broker and SQLite."""
import sqlite3

import pytest
from django.conf import settings
from django.db import connections

from config.celery import app as celery_app


def test_filesystem_broker_looks_for_work_often():
    # kombu's default (1 s) made each task wait about a second after the previous one.
    assert settings.CELERY_BROKER_URL.startswith("filesystem://")
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
