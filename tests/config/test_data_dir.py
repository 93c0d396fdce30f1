"""The data dir and the SQLite database are private to the account that runs ModelXRef."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from config.data_dir import make_private_dirs, make_private_file

REPO = Path(__file__).resolve().parents[2]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _start(data_dir: Path, *args: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")}
    env.update(MODELXREF_DATA_DIR=str(data_dir), DJANGO_SETTINGS_MODULE="config.settings")
    # umask 022, the usual default: without explicit modes everything would be world-readable.
    subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, env=env, check=True, umask=0o022,
                   capture_output=True, timeout=120)


def test_a_new_data_dir_and_its_database_are_private(tmp_path):
    data = tmp_path / "var"
    _start(data, "migrate", "--noinput")
    assert mode(data) == 0o700
    for folder in ("uploads", "tmp", "cache", "broker", "broker/queue", "broker/control", "broker/processed"):
        assert mode(data / folder) == 0o700, folder
    assert mode(data / "db.sqlite3") == 0o600 and (data / "db.sqlite3").stat().st_size > 0  # migrated, still private


def test_a_world_readable_data_dir_from_an_older_version_is_tightened_on_start(tmp_path):
    data = tmp_path / "var"
    (data / "uploads").mkdir(parents=True, mode=0o755)
    data.chmod(0o755)
    (data / "db.sqlite3").touch(mode=0o644)
    (data / "db.sqlite3-wal").touch(mode=0o644)
    os.chmod(data / "db.sqlite3", 0o644)
    os.chmod(data / "db.sqlite3-wal", 0o644)
    _start(data, "check")
    assert (mode(data), mode(data / "uploads")) == (0o700, 0o700)
    assert (mode(data / "db.sqlite3"), mode(data / "db.sqlite3-wal")) == (0o600, 0o600)


def test_private_dirs_leave_the_parents_of_the_data_dir_alone(tmp_path):
    parent = tmp_path / "shared"
    parent.mkdir(mode=0o755)
    parent.chmod(0o755)
    make_private_dirs(parent / "var")
    assert mode(parent) == 0o755 and mode(parent / "var") == 0o700


def test_private_file_is_created_empty_and_0600(tmp_path):
    old = os.umask(0)
    try:
        make_private_file(tmp_path / "db.sqlite3")
    finally:
        os.umask(old)
    assert mode(tmp_path / "db.sqlite3") == 0o600 and (tmp_path / "db.sqlite3").read_bytes() == b""
