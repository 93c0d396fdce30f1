"""API throttles that fail open: a throttle protects the API, it must not take it down.

The throttle counters live in the default cache, which is Redis when REDIS_URL
is set. If that Redis is unreachable, DRF's throttles raise on every request
and the whole API answers 500; these let the request through instead and log
a warning (at most once a minute per process, not once per request).
"""
from __future__ import annotations

import logging
import time

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


class CountingRateThrottle(throttling.SimpleRateThrottle):
    """With Redis, a request costs a counter increment, not DRF's whole history of timestamps.

    DRF's SimpleRateThrottle reads, trims and writes back the list of every request of the window (up
    to 10,000 floats, ~80 KB pickled, for a busy token at the default 10000/hour): 6 % of the web
    workers' time in the load test (docs/BENCHMARKS.md). Here a window opens at a key's first request
    and lasts the rate's duration; the key counts its requests (Redis INCR keeps its expiry). Other
    caches (the file-based one of a one-machine setup) keep DRF's history: their increment is a read
    and a write that would reset the expiry."""

    counted = False  # this request went through the counter (wait() then knows the window's end)

    def allow_request(self, request, view):
        if self.rate is None or not shared():  # shared(): the default cache is Redis
            return super().allow_request(request, view)
        key = self.get_cache_key(request, view)
        if key is None:
            return True
        # A key of its own: DRF's history lists (under `key`, from before) just expire.
        self.key, self.counted, self.now, self.window_ends = f"{key}:count", True, self.timer(), None
        if self._opened():
            return True
        try:
            count = self.cache.incr(self.key)
        except ValueError:  # the window ended between the two calls: this request opens the next one
            self._opened()
            return True
        if count <= self.num_requests:
            return True
        self.window_ends = self.cache.get(f"{self.key}:ends")
        return False

    def _opened(self) -> bool:
        """Open a window with this request as its first, unless one is open."""
        if not self.cache.add(self.key, 1, self.duration):
            return False
        self.cache.set(f"{self.key}:ends", self.now + self.duration, self.duration)
        return True

    def wait(self):
        if not self.counted:
            return super().wait()
        return max(0.0, (self.window_ends or self.now + self.duration) - self.now)


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
