"""A number that changes whenever anything a duplicate group is made of changes: the key of their cache.

Duplicate grouping reads four tables (LocalFile, FileHashes, Match, SourceModel): ~100 ms for a
10,000-file library, which the duplicates page, its exports and the API asked for on every view
(docs/BENCHMARKS.md, "Scale"). Their answer is cached under this revision, so it must move on every
write to those tables, whoever makes it. So the write is caught where every ORM call ends up, in the
database connection (an execute wrapper, installed on each new connection of every process: web,
workers, commands), not in the callers: a QuerySet.update(), a bulk_create, a cascade delete, a raw
cursor write all pass through it. A worker's progress and heartbeat writes (UNGROUPED_LOCALFILE_COLUMNS)
are the one exception: they change nothing a group is made of.

When a watched write that changed a row commits, the revision is incremented (a transaction that rolls back changes
nothing, and bumps nothing). Readers take the revision before they compute, so what they store is at
least as new as the revision says. Inside a transaction a reader could see its own uncommitted writes:
`usable()` is False there, and such readers compute afresh.

A worker's hashing and reading of one file writes only that file's rows, yet each of those writes would
make every user's next duplicates view a computed one. Inside `owner_writes(owner_id)` (the hashing and
analysis stages) writes to LocalFile and FileHashes move that owner's revision instead, and readers key
their cache on both. Everything else (Match, SourceModel, any write outside the stages) moves the
library-wide one: identification may rematch other owners' files, and model names are everyone's.

The revision lives in the default cache when that is Redis: shared by every process, incremented
atomically. Where it is missing it starts from the clock, never from a number an older cache entry could
carry. Without Redis (one machine, SQLite, the file-based cache) two processes could both read N and write
N + 1, so nothing is bumped and nothing cached: `shared()` is False.
"""
from __future__ import annotations

import contextlib
import contextvars
import logging
import re
import time

from django.conf import settings
from django.core.cache import cache
from django.db import connections, transaction

log = logging.getLogger(__name__)

KEY = "modelxref:library-revision"
WATCHED_TABLES = frozenset({"models_catalog_localfile", "models_catalog_filehashes", "models_catalog_match",
                            "models_catalog_sourcemodel"})
_WRITE = re.compile(r'\s*(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+"?(\w+)"?', re.IGNORECASE)


def shared() -> bool:
    """Whether the revision can be trusted: in Redis (see the module's docstring)."""
    return settings.CACHES["default"]["BACKEND"].endswith(".RedisCache")


# What a working worker writes to a file's row every second or so (progress, heartbeat, its stage's
# bookkeeping): nothing a group is made of. Were these bumps, any hashing anywhere would move the revision
# every second and no one's groups would ever be served from the cache. Every other column bumps, so a
# column added later is watched until it is listed here.
UNGROUPED_LOCALFILE_COLUMNS = frozenset({"bytes_done", "bytes_total", "analysed_bytes", "heartbeat_at",
                                         "enqueued_at", "stage_attempts", "stage_started_at"})
_ASSIGNMENT = re.compile(r'\s*"?(\w+)"?\s*=')


def writes_watched_table(sql: str) -> bool:
    return watched_table_written(sql) is not None


def watched_table_written(sql: str) -> str | None:
    """The watched table `sql` writes something a group is made of in, or None."""
    m = _WRITE.match(sql)
    table = m.group(1).lower() if m else None
    if table not in WATCHED_TABLES:
        return None
    if table == "models_catalog_localfile" and sql.lstrip()[:6].upper() == "UPDATE":
        columns = _set_columns(sql[m.end():])
        if columns is not None and columns <= UNGROUPED_LOCALFILE_COLUMNS:
            return None
    return table


def _set_columns(rest: str) -> set[str] | None:
    """The columns an UPDATE's SET clause assigns, from what follows its table name; None when it cannot tell
    (then the write counts). The clause is split at its top-level commas, up to a top-level WHERE, so the
    commas and WHEREs of expressions and subqueries (in parentheses) are not mistaken for its own."""
    head = re.match(r"\s*SET\s", rest, re.IGNORECASE)
    if not head:
        return None
    parts, depth, start, i = [], 0, head.end(), head.end()
    while i < len(rest):
        ch = rest[i]
        if ch in "'\"" and (end := rest.find(ch, i + 1)) > 0:  # a quoted name or literal: skip it whole
            i = end + 1
            continue
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif depth == 0 and ch == ",":
            parts.append(rest[start:i])
            start = i + 1
        elif depth == 0 and re.match(r"\sWHERE\s", rest[i:i + 7], re.IGNORECASE):
            break
        i += 1
    parts.append(rest[start:i])
    columns = set()
    for part in parts:
        assigned = _ASSIGNMENT.match(part)
        if not assigned:
            return None
        columns.add(assigned.group(1).lower())
    return columns


def _key(owner_id: int | None) -> str:
    return KEY if owner_id is None else f"{KEY}:owner:{owner_id}"


def current(owner_id: int | None = None) -> int | None:
    """The library-wide revision now, or with `owner_id` the revision of that owner's own rows (see the
    module's docstring: a reader of one owner's groups keys on both); None when the cache cannot be
    reached (then nothing may be cached)."""
    key = _key(owner_id)
    try:
        value = cache.get(key)
        if value is None:
            cache.add(key, time.time_ns())
            value = cache.get(key)
        return value
    except Exception as exc:  # the cache is an optimisation: Redis down means compute, not fail
        log.warning("library revision unreadable (%s: %s): duplicate groups are computed afresh", type(exc).__name__, exc)
        return None


_owner_scope: contextvars.ContextVar[int | None] = contextvars.ContextVar("library_revision_owner", default=None)
OWNER_SCOPED_TABLES = frozenset({"models_catalog_localfile", "models_catalog_filehashes"})


@contextlib.contextmanager
def owner_writes(owner_id: int | None):
    """Writes to LocalFile and FileHashes inside move `owner_id`'s revision, not the library-wide one: for
    code that writes only that owner's rows (one file's hashing and analysis). None: library-wide again,
    for what such code calls that may write anyone's (identification)."""
    token = _owner_scope.set(owner_id)
    try:
        yield
    finally:
        _owner_scope.reset(token)


RETRY_AFTER_SECONDS = 5.0  # after a failed bump, writes do not wait on an unreachable Redis again for this long
_down_since = [0.0]


def bump(owner_id: int | None = None) -> None:
    """Called after a watched write commits. Never raises, and logs only at debug level: the write has
    happened, and Redis being down is already said where it matters (the broker's errors, the 503 pages, the
    commands' one-line message). What an outage can leave is a cached answer that missed writes made
    meanwhile, for at most MODELXREF_DUPLICATES_CACHE_SECONDS (README)."""
    if _down_since[0] and time.monotonic() - _down_since[0] < RETRY_AFTER_SECONDS:
        return
    try:
        key = _key(owner_id)
        try:
            cache.incr(key)
        except ValueError:  # no revision yet (or evicted): start one no older entry can carry
            cache.add(key, time.time_ns())
        _down_since[0] = 0.0
    except Exception as exc:
        _down_since[0] = time.monotonic()
        log.debug("library revision not bumped (%s: %s): cached duplicate groups may miss this write until "
                 "they expire (MODELXREF_DUPLICATES_CACHE_SECONDS)", type(exc).__name__, exc)


def usable(using: str = "default") -> bool:
    """Whether a reader may use what is cached under the revision: not inside a transaction."""
    return not connections[using].in_atomic_block


class WriteWatcher:
    """connection.execute_wrappers entry: bumps the revision when a watched write commits."""

    def __init__(self, alias: str):
        self.alias = alias

    def __call__(self, execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        table = watched_table_written(sql) if isinstance(sql, str) else None
        if table is not None and shared() and not _changed_nothing(sql, context):
            owner_id = _owner_scope.get() if table in OWNER_SCOPED_TABLES else None
            connection = connections[self.alias]
            if not connection.in_atomic_block:
                bump(owner_id)  # autocommit: the statement has committed
            elif not any(func == _Bump(owner_id) for _, func, _ in connection.run_on_commit):
                transaction.on_commit(_Bump(owner_id), using=self.alias, robust=True)
        return result


class _Bump:
    """An on_commit callback bumping one revision; equal to another for the same one (one bump a commit)."""

    def __init__(self, owner_id: int | None):
        self.owner_id = owner_id

    def __call__(self) -> None:
        bump(self.owner_id)

    def __eq__(self, other) -> bool:
        return isinstance(other, _Bump) and other.owner_id == self.owner_id

    __hash__ = None


def _changed_nothing(sql: str, context: dict) -> bool:
    """An UPDATE or DELETE that changed no row changed nothing a group is made of: the matching's "delete
    this file's old matches" and the conditional updates of the workers and the reaper often find none.
    Not asked of an INSERT: with RETURNING (Django's inserts), SQLite counts its rows only once fetched."""
    if sql.lstrip()[:6].upper() not in ("UPDATE", "DELETE"):
        return False
    return getattr(context.get("cursor"), "rowcount", -1) == 0


def install(sender, connection, **kwargs) -> None:
    """connection_created receiver (apps.py): watch each new connection once."""
    if not any(isinstance(w, WriteWatcher) for w in connection.execute_wrappers):
        connection.execute_wrappers.append(WriteWatcher(connection.alias))
