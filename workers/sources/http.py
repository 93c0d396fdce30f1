"""Shared plumbing for outgoing HTTP calls: sessions, back-off, rate limits.

PURE: no Django. Every wait goes through an injected `sleep` and every clock
read through an injected `clock`, so tests never really wait.
"""
from __future__ import annotations

import math
import random
import threading
import time
from dataclasses import dataclass, field
from datetime import timezone
from email.utils import parsedate_to_datetime
from typing import Callable, Protocol

import requests
from requests.adapters import HTTPAdapter

DEFAULT_USER_AGENT = "ModelXRef/0.1 (+https://github.com/modelxref)"


def make_session(*, user_agent: str = DEFAULT_USER_AGENT, pool_size: int = 10) -> requests.Session:
    """A session with keep-alive pools and NO transport-level retries.

    urllib3 retries are switched off because the callers' RetryPolicy owns
    retrying: two retry layers would multiply attempts and hide back-off.
    """
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.headers["User-Agent"] = user_agent
    session.headers["Accept"] = "application/json"
    return session


def parse_retry_after(value: str | None, *, now: Callable[[], float] = time.time) -> float | None:
    """Seconds to wait from a Retry-After header (delay-seconds or HTTP-date).

    None when absent or unreadable, so callers fall back to their own back-off
    instead of trusting garbage. Dates in the past give 0.0.
    """
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if math.isnan(seconds) or math.isinf(seconds) or seconds < 0:
            return None
        return seconds
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        # RFC 9110 dates are GMT; a naive result means the zone was "-0000".
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - now())


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential back-off with jitter: ~base, ~2*base, ~4*base ... capped at `cap`.

    `max_attempts` counts every try, the first one included. A server-given
    Retry-After is honoured as is (not capped): the server knows best. A wait
    longer than `max_wait` is not slept at all: the caller should give up and
    reschedule, so a worker is not parked for minutes.
    """

    base: float = 1.0
    cap: float = 30.0
    max_attempts: int = 6
    jitter: float = 0.2
    max_wait: float = 120.0
    rng: Callable[[], float] = field(default=random.random, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.base <= 0 or self.cap < self.base:
            raise ValueError("RetryPolicy needs 0 < base <= cap")
        if self.max_attempts < 1:
            raise ValueError("RetryPolicy needs max_attempts >= 1")
        if not 0 <= self.jitter < 1:
            raise ValueError("RetryPolicy needs 0 <= jitter < 1")

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        if retry_after is not None and retry_after >= 0:
            return float(retry_after)
        exponent = max(0, attempt - 1)
        # Cap the exponent before pow so attempt=10_000 cannot overflow.
        raw = self.base * (2.0 ** min(exponent, 64))
        spread = 1.0 + self.jitter * (2.0 * self.rng() - 1.0)
        return min(self.cap, raw * spread)


class RateLimiterError(Exception):
    """The rate limiter itself failed (for example its Redis is unreachable)."""


class RateLimiter(Protocol):
    def acquire(self) -> None:
        """Block until one call is allowed."""


class NullRateLimiter:
    """Never limits; the default when no limiter is configured."""

    def acquire(self) -> None:
        return None

    def try_acquire(self) -> float:
        return 0.0


class LocalRateLimiter:
    """Thread-safe token bucket for one process.

    `rate_per_second` tokens are added continuously up to `burst`; each call
    takes one. The sleep happens outside the lock so other threads can keep
    computing their own waits.
    """

    def __init__(
        self,
        rate_per_second: float,
        burst: int = 1,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not rate_per_second > 0:
            raise ValueError("rate_per_second must be > 0")
        if burst < 1:
            raise ValueError("burst must be >= 1")
        self.rate_per_second = float(rate_per_second)
        self.burst = int(burst)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = float(self.burst)
        self._stamp = clock()

    def try_acquire(self) -> float:
        """Take a token if one is there (returns 0.0), else the seconds until one is."""
        with self._lock:
            now = self._clock()
            elapsed = max(0.0, now - self._stamp)
            self._stamp = now
            self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate_per_second)
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return 0.0
            return (1.0 - self._tokens) / self.rate_per_second

    def acquire(self) -> None:
        while True:
            wait = self.try_acquire()
            if wait <= 0:
                return
            self._sleep(wait)


# Token bucket kept in one Redis hash. Redis TIME is the clock so that worker
# hosts with skewed clocks still share one bucket; the whole read-modify-write
# runs atomically inside the script. Returns the wait as a string because Lua
# numbers are truncated to integers on the way back.
_TOKEN_BUCKET_LUA = """
if redis.replicate_commands then pcall(redis.replicate_commands) end
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
local elapsed = now - ts
if elapsed < 0 then elapsed = 0 end
tokens = math.min(burst, tokens + elapsed * rate)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens), 'ts', string.format('%.6f', now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return string.format('%.6f', wait)
"""


class RedisRateLimiter:
    """Token bucket shared by every process and host that uses the same Redis key."""

    def __init__(
        self,
        redis_url: str,
        key: str,
        rate_per_second: float,
        burst: int = 1,
        *,
        sleep: Callable[[float], None] = time.sleep,
        client: object | None = None,
        socket_timeout: float = 5.0,
    ) -> None:
        if not rate_per_second > 0:
            raise ValueError("rate_per_second must be > 0")
        if burst < 1:
            raise ValueError("burst must be >= 1")
        if not key:
            raise ValueError("key must be a non-empty string")
        self.rate_per_second = float(rate_per_second)
        self.burst = int(burst)
        self.key = key
        self._sleep = sleep
        if client is None:
            import redis  # imported here so processes without a limiter never need it

            client = redis.Redis.from_url(
                redis_url, socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout
            )
        self._client = client
        self._script = client.register_script(_TOKEN_BUCKET_LUA)

    def try_acquire(self) -> float:
        """Take a token if one is there (returns 0.0), else the seconds until one is."""
        import redis

        try:
            reply = self._script(keys=[self.key], args=[repr(self.rate_per_second), self.burst])
        except redis.RedisError as exc:
            raise RateLimiterError(f"Redis rate limiter {self.key!r} failed: {exc}") from exc
        if isinstance(reply, bytes):
            reply = reply.decode("ascii", "replace")
        try:
            return max(0.0, float(reply))
        except (TypeError, ValueError) as exc:
            raise RateLimiterError(f"Redis rate limiter {self.key!r} answered {reply!r}") from exc

    def acquire(self) -> None:
        while True:
            wait = self.try_acquire()
            if wait <= 0:
                return
            self._sleep(wait)
