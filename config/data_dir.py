"""The data dir is private to the account that runs ModelXRef (no Django here: settings import it).

It holds the SQLite database (password hashes, sessions), uploaded models,
broker messages and the hash cache, so folders are 0700 and the database file
0600 whatever the umask says. SQLite gives its -wal/-shm/-journal files the
database file's mode, so creating that file 0600 covers them too. A data dir
left world-readable by an older version is tightened on the next start.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def _tighten(path: Path, mode: int) -> None:
    try:
        st = path.stat()
        if stat.S_IMODE(st.st_mode) & 0o077 and st.st_uid == os.getuid():
            path.chmod(mode)
    except OSError:
        pass  # not ours to change (a mount owned by someone else): leave it as the operator made it


def make_private_dirs(*paths: Path) -> None:
    """Create each folder 0700 (or tighten it); list intermediate folders too, parents are not touched."""
    for path in paths:
        path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
        _tighten(path, PRIVATE_DIR)


def make_private_file(path: Path) -> None:
    """Create an empty file 0600 if missing (an empty file is a valid SQLite database), or tighten it."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE))
    except FileExistsError:
        pass
    except OSError:
        return  # e.g. a read-only location: SQLite will say what is wrong when it opens it
    for companion in (path, *(path.with_name(path.name + suffix) for suffix in ("-wal", "-shm", "-journal"))):
        if companion.exists():
            _tighten(companion, PRIVATE_FILE)
