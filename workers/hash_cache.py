"""A persistent cache of file hashes keyed on file identity (PURE: no Django).

Keyed on (device, inode) and valid only while size and mtime_ns are unchanged:
unlike A1111's cache.json (keyed by name, rehashed only when mtime is newer),
a copy that kept its mtime is a different inode and a rename keeps its hashes.
SQLite in WAL mode lets several worker processes and threads share one file;
each thread of each process gets its own connection.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from pathlib import Path

from workers.hashing import (
    ComputedHashes,
    FileIdentity,
    HashesFormatError,
    HashingError,
    Progress,
    file_identity,
    hash_file_and_identity,
)

SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 30.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS file_hashes (
    device   INTEGER NOT NULL,
    inode    INTEGER NOT NULL,
    size     INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    hashes   TEXT    NOT NULL,
    stored_at REAL   NOT NULL,
    PRIMARY KEY (device, inode)
)
"""


class HashCacheError(HashingError):
    """The cache file cannot be opened, read or written."""


def _to_sqlite_int(value: int) -> int:
    # st_dev / st_ino are unsigned 64-bit; SQLite integers are signed.
    return value - (1 << 64) if value >= (1 << 63) else value


def _retry_while_locked(action, *, seconds: float = BUSY_TIMEOUT_S):
    """Run `action`, retrying on "database is locked" errors SQLite returns without waiting
    (lock upgrades such as the switch to WAL, or the first schema write, race between processes)."""
    deadline = time.monotonic() + seconds
    delay = 0.005
    while True:
        try:
            return action()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)


class HashCache:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._local = threading.local()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _retry_while_locked(self._create_schema)
        except (sqlite3.Error, OSError) as exc:
            raise HashCacheError(f"{self.path}: cannot open hash cache: {exc}") from exc

    def _create_schema(self) -> None:
        conn = self._connection()
        with conn:
            conn.execute(_SCHEMA)
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        elif version != SCHEMA_VERSION:
            raise HashCacheError(f"{self.path}: hash cache schema {version}, expected {SCHEMA_VERSION}")

    def _connection(self) -> sqlite3.Connection:
        # A connection must not cross threads, nor survive a fork into a child.
        pid = os.getpid()
        held = getattr(self._local, "held", None)
        if held is not None and held[0] == pid:
            return held[1]
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        # WAL is a property of the file: switch only once. Switching needs an exclusive lock that
        # SQLite does not wait for, so processes opening a new cache together retry instead.
        if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            _retry_while_locked(lambda: conn.execute("PRAGMA journal_mode=WAL"))
        # Losing the last writes on power loss only costs a re-hash.
        conn.execute("PRAGMA synchronous=NORMAL")
        self._local.held = (pid, conn)
        return conn

    def get(self, identity: FileIdentity) -> ComputedHashes | None:
        key = (_to_sqlite_int(identity.device), _to_sqlite_int(identity.inode))
        try:
            row = self._connection().execute(
                "SELECT size, mtime_ns, hashes FROM file_hashes WHERE device = ? AND inode = ?", key
            ).fetchone()
        except sqlite3.Error as exc:
            raise HashCacheError(f"{self.path}: cannot read hash cache: {exc}") from exc
        if row is None or row[0] != identity.size or row[1] != identity.mtime_ns:
            return None
        try:
            hashes = ComputedHashes.from_json(json.loads(row[2]))
        except (ValueError, HashesFormatError):
            self._delete(key)  # a damaged row is just a miss
            return None
        return hashes if hashes.size == identity.size else None

    def put(self, identity: FileIdentity, hashes: ComputedHashes) -> None:
        if hashes.size != identity.size:
            raise HashCacheError(f"refusing to cache hashes of {hashes.size} bytes under a {identity.size}-byte identity")
        try:
            self._connection().execute(
                "INSERT OR REPLACE INTO file_hashes (device, inode, size, mtime_ns, hashes, stored_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    _to_sqlite_int(identity.device),
                    _to_sqlite_int(identity.inode),
                    identity.size,
                    identity.mtime_ns,
                    json.dumps(hashes.to_json(), separators=(",", ":")),
                    time.time(),
                ),
            )
        except sqlite3.Error as exc:
            raise HashCacheError(f"{self.path}: cannot write hash cache: {exc}") from exc

    def _delete(self, key: tuple[int, int]) -> None:
        try:
            self._connection().execute("DELETE FROM file_hashes WHERE device = ? AND inode = ?", key)
        except sqlite3.Error:
            pass

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end)."""
        held = getattr(self._local, "held", None)
        if held is not None:
            held[1].close()
            self._local.held = None


def hash_file_cached(
    path: str | os.PathLike[str],
    *,
    cache: HashCache | None,
    progress: Progress | None = None,
) -> tuple[ComputedHashes, bool]:
    """(hashes, cache_hit). A hit costs one stat; a miss hashes and stores the identity verified while reading."""
    hashes, _identity, hit = hash_file_cached_with_identity(path, cache=cache, progress=progress)
    return hashes, hit


def hash_file_cached_with_identity(
    path: str | os.PathLike[str],
    *,
    cache: HashCache | None,
    progress: Progress | None = None,
    follow_symlinks: bool = True,
) -> tuple[ComputedHashes, FileIdentity, bool]:
    """Like hash_file_cached, plus the identity the hashes belong to (for callers that remember files).
    follow_symlinks=False: a symlink as the last component is refused (see hash_file_and_identity)."""
    if cache is not None:
        identity = file_identity(path, follow_symlinks=follow_symlinks)
        cached = cache.get(identity)
        if cached is not None:
            if progress is not None:
                progress(cached.size, cached.size)
            return cached, identity, True
    hashes, identity = hash_file_and_identity(path, progress, follow_symlinks=follow_symlinks)
    if cache is not None:
        cache.put(identity, hashes)
    return hashes, identity, False
