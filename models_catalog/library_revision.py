"""A number that changes whenever anything a duplicate group is made of changes: the key of their cache.

Duplicate grouping reads four tables (LocalFile, FileHashes, Match, SourceModel): ~100 ms for a
10,000-file library, which the duplicates page, its exports and the API asked for on every view
(docs/BENCHMARKS.md, "Scale"). Their answer is cached under this revision, so it must move on every
write to those tables, whoever makes it. So the write is caught where every ORM call ends up, in the
database connection (an execute wrapper, installed on each new connection of every process: web,
workers, commands), not in the callers: a QuerySet.update(), a bulk_create, a cascade delete, a raw
cursor write all pass through it.

When a watched write commits, the revision is incremented (a transaction that rolls back changes
nothing, and bumps nothing). Readers take the revision before they compute, so what they store is at
least as new as the revision says. Inside a transaction a reader could see its own uncommitted writes:
`usable()` is False there, and such readers compute afresh.

The revision lives in the default cache when that is Redis: shared by every process, incremented
atomically. Where it is missing it starts from the clock, never from a number an older cache entry could
carry. Without Redis (one machine, SQLite, the file-based cache) two processes could both read N and write
N + 1, so nothing is bumped and nothing cached: `shared()` is False.
"""
from __future__ import annotations

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


def writes_watched_table(sql: str) -> bool:
    m = _WRITE.match(sql)
    return bool(m) and m.group(1).lower() in WATCHED_TABLES


def current() -> int | None:
    """The revision now; None when the cache cannot be reached (then nothing may be cached)."""
    try:
        value = cache.get(KEY)
        if value is None:
            cache.add(KEY, time.time_ns())
            value = cache.get(KEY)
        return value
    except Exception as exc:  # the cache is an optimisation: Redis down means compute, not fail
        log.warning("library revision unreadable (%s: %s): duplicate groups are computed afresh", type(exc).__name__, exc)
        return None


RETRY_AFTER_SECONDS = 5.0  # after a failed bump, writes do not wait on an unreachable Redis again for this long
_down_since = [0.0]


def bump() -> None:
    """Called after a watched write commits. Never raises, and logs only at debug level: the write has
    happened, and Redis being down is already said where it matters (the broker's errors, the 503 pages, the
    commands' one-line message). What an outage can leave is a cached answer that missed writes made
    meanwhile, for at most MODELXREF_DUPLICATES_CACHE_SECONDS (README)."""
    if _down_since[0] and time.monotonic() - _down_since[0] < RETRY_AFTER_SECONDS:
        return
    try:
        try:
            cache.incr(KEY)
        except ValueError:  # no revision yet (or evicted): start one no older entry can carry
            cache.add(KEY, time.time_ns())
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
        if isinstance(sql, str) and writes_watched_table(sql) and shared():
            connection = connections[self.alias]
            if not connection.in_atomic_block:
                bump()  # autocommit: the statement has committed
            elif not any(func is bump for _, func, _ in connection.run_on_commit):
                transaction.on_commit(bump, using=self.alias, robust=True)
        return result


def install(sender, connection, **kwargs) -> None:
    """connection_created receiver (apps.py): watch each new connection once."""
    if not any(isinstance(w, WriteWatcher) for w in connection.execute_wrappers):
        connection.execute_wrappers.append(WriteWatcher(connection.alias))
