"""A1111 >= 1.7's hash cache: the `cache/` diskcache folder beside `models/` (modules/cache.py).

PURE: no Django, and no diskcache either. A1111 keeps one diskcache per subsection
(`cache/hashes/cache.db`, `cache/hashes-addnet/cache.db`); each is an SQLite file whose `Cache`
table holds the title as a raw text key and `{"mtime": float, "sha256": hex}` as a *pickled* value
(diskcache's MODE_PICKLE). diskcache itself would unpickle it with pickle.loads, which runs whatever a
crafted cache.db names; we read the table with sqlite3 (read-only) and the values with our own
restricted pickle interpreter (workers.modelfiles.restricted_pickle), which imports nothing: a global
outside its allowlist is refused, an allowlisted one becomes an inert stand-in. A refused value, one
that is not a plain {mtime, sha256} dict, one diskcache keeps in a separate file (only values over
256 KB, never a hash entry) or in any mode other than pickle is skipped with a note.
The result has cache.json's shape, so local_sidecars.parse_a1111_cache resolves titles the same way.
"""
from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from workers.modelfiles.restricted_pickle import load_restricted
from workers.modelfiles.types import ModelFileError

SUBSECTIONS = ("hashes", "hashes-addnet")  # what modules/hashes.py writes; other subsections hold no hashes
MAX_DB_BYTES = 256 * 1024 * 1024
MAX_VALUE_BYTES = 64 * 1024  # a hash entry pickles to ~110 bytes
MAX_ROWS = 1_000_000
_MODE_PICKLE = 4  # diskcache.core.MODE_PICKLE


def is_a1111_cache_dir(path: Path) -> bool:
    """`path` is a webui's `cache/` folder: a `models/` folder beside it, a subsection db inside."""
    path = Path(path)
    return (path.name == "cache" and (path.parent / "models").is_dir()
            and any((path / sub / "cache.db").is_file() for sub in SUBSECTIONS))


def read_a1111_diskcache(cache_dir: Path, *, problems: list[str] | None = None) -> dict:
    """{"hashes": {title: {"mtime", "sha256"}}, "hashes-addnet": {...}} from the diskcache folder."""
    notes = problems if problems is not None else []
    out: dict[str, dict] = {}
    now = time.time()
    for sub in SUBSECTIONS:
        db = Path(cache_dir) / sub / "cache.db"
        if not db.is_file() or db.is_symlink():
            continue
        if db.stat().st_size > MAX_DB_BYTES:
            notes.append(f"{db}: larger than {MAX_DB_BYTES:,} bytes, not read")
            continue
        entries = out.setdefault(sub, {})
        try:
            # Read-only: A1111 may be running and writing; we never change its cache.
            con = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
        except sqlite3.Error as exc:
            notes.append(f"{db}: cannot open ({exc})")
            continue
        try:
            rows = con.execute(
                "SELECT key, raw, mode, filename, value FROM Cache "
                "WHERE expire_time IS NULL OR expire_time > ? LIMIT ?", (now, MAX_ROWS))
            for key, raw, mode, filename, value in rows:
                entry = _entry(key, raw, mode, filename, value, db=db, notes=notes)
                if entry is not None:
                    entries[key] = entry
        except sqlite3.Error as exc:
            notes.append(f"{db}: not a diskcache database ({exc})")
        finally:
            con.close()
    return out


def _entry(key, raw, mode, filename, value, *, db: Path, notes: list[str]) -> dict | None:
    if not (raw and isinstance(key, str)):
        return None  # A1111's titles are plain strings (stored raw); anything else is not its entry
    if mode != _MODE_PICKLE or filename is not None or not isinstance(value, bytes):
        notes.append(f"{db}: {key!r} is not an inline pickled entry (mode {mode}), skipped")
        return None
    if len(value) > MAX_VALUE_BYTES:
        notes.append(f"{db}: {key!r} holds {len(value):,} bytes, not a hash entry, skipped")
        return None
    try:
        data, _end = load_restricted(value)
    except ModelFileError as exc:
        notes.append(f"{db}: {key!r} could not be read safely ({exc}), skipped")
        return None
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        notes.append(f"{db}: {key!r} is not A1111's {{mtime, sha256}} entry, skipped")
        return None
    return {k: data[k] for k in ("mtime", "sha256") if k in data}
