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

log = logging.getLogger(__name__)

WARN_EVERY_SECONDS = 60.0
_last_warning = [0.0]


def _warn(throttle, exc: Exception) -> None:
    now = time.monotonic()
    if now - _last_warning[0] >= WARN_EVERY_SECONDS:
        _last_warning[0] = now
        log.warning("API throttle %s skipped: its cache is unreachable (%s: %s); requests are not throttled until it is back",
                    type(throttle).__name__, type(exc).__name__, exc)


class FailOpenMixin:
    def allow_request(self, request, view):
        try:
            return super().allow_request(request, view)
        except (RedisError, OSError) as exc:  # OSError: the file-based cache's folder, when Redis is not used
            _warn(self, exc)
            return True


class UserRateThrottle(FailOpenMixin, throttling.UserRateThrottle):
    pass


class ScopedRateThrottle(FailOpenMixin, throttling.ScopedRateThrottle):
    pass
