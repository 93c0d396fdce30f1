"""API throttles that fail open: a throttle protects the API, it must not take it down.

The throttle counters live in the default cache, which is Redis when REDIS_URL
is set. If that Redis is unreachable, DRF's throttles raise on every request
and the whole API answers 500; these let the request through instead and log
a warning (at most once a minute per process, not once per request).
"""
from __future__ import annotations

import logging
import time

from redis.commands.core import Script
from redis.exceptions import RedisError
from rest_framework import throttling

from models_catalog.library_revision import shared

log = logging.getLogger(__name__)

WARN_EVERY_SECONDS = 60.0
_last_warning = [0.0]


def _warn(throttle, exc: Exception) -> None:
    now = time.monotonic()
    if now - _last_warning[0] >= WARN_EVERY_SECONDS:
        _last_warning[0] = now
        log.warning("API throttle %s skipped: its cache is unreachable (%s: %s); requests are not throttled until it is back",
                    type(throttle).__name__, type(exc).__name__, exc)


# One round trip, atomic: count this request, open the window at its first, say how long the window lasts.
# (A key without an expiry, which no window of ours leaves, gets one: it would otherwise throttle forever.)
COUNT_SCRIPT = """
local count = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {count, ttl}
"""
# As bytes, the Script needs no client to take its SHA; it runs EVALSHA on the client it is given, and loads
# itself into a Redis that lost it.
COUNT = Script(None, COUNT_SCRIPT.encode())


class CountingRateThrottle(throttling.SimpleRateThrottle):
    """With Redis, a request costs one counter increment, not DRF's whole history of timestamps.

    DRF's SimpleRateThrottle reads, trims and writes back the list of every request of the window (up
    to 10,000 floats, ~80 KB pickled, for a busy token at the default 10000/hour): 6 % of the web
    workers' time in the load test (docs/BENCHMARKS.md). Here a window opens at a key's first request
    and lasts the rate's duration; the key counts its requests. One script does it in one round trip
    (Django's cache add + incr took three, each a wait for the GIL under load). Other caches (the
    file-based one of a one-machine setup) keep DRF's history: their increment is a read and a write
    that would reset the expiry."""

    counted = False  # this request went through the counter (wait() then knows the window's end)

    def allow_request(self, request, view):
        if self.rate is None or not shared():  # shared(): the default cache is Redis
            return super().allow_request(request, view)
        key = self.get_cache_key(request, view)
        if key is None:
            return True
        # A key of its own: DRF's history lists (under `key`, from before) just expire.
        self.counted, self.now = True, self.timer()
        count, ttl_ms = self._count(f"{key}:count")
        self.window_ends = self.now + ttl_ms / 1000
        return count <= self.num_requests

    def _count(self, key: str) -> tuple[int, int]:
        client = self.cache._cache.get_client(write=True)  # Django's RedisCache: its redis-py client
        count, ttl_ms = COUNT(keys=[self.cache.make_and_validate_key(key)], args=[int(self.duration * 1000)],
                              client=client)
        return int(count), int(ttl_ms)

    def wait(self):
        if not self.counted:
            return super().wait()
        return max(0.0, self.window_ends - self.now)


class FailOpenMixin:
    def allow_request(self, request, view):
        try:
            return super().allow_request(request, view)
        except (RedisError, OSError) as exc:  # OSError: the file-based cache's folder, when Redis is not used
            _warn(self, exc)
            return True


# Counting sits between DRF's scoped / user classes (which pick the rate) and SimpleRateThrottle (which counts).
class UserRateThrottle(FailOpenMixin, throttling.UserRateThrottle, CountingRateThrottle):
    pass


class ScopedRateThrottle(FailOpenMixin, throttling.ScopedRateThrottle, CountingRateThrottle):
    pass
