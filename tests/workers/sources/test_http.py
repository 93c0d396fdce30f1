import os
import threading
import time
import uuid
from email.utils import format_datetime
from datetime import datetime, timezone

import pytest

from workers.sources.http import (
    LocalRateLimiter,
    RateLimiterError,
    RedisRateLimiter,
    RetryPolicy,
    make_session,
    parse_retry_after,
)

REDIS_URL = "redis://127.0.0.1:6379/15"


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


# -- Retry-After ----------------------------------------------------------------


def test_retry_after_seconds_are_read_as_seconds():
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 2.5 ") == 2.5
    assert parse_retry_after("0") == 0.0


def test_retry_after_http_date_is_converted_to_seconds_from_now():
    now = datetime(2025, 3, 1, 12, 0, 0, tzinfo=timezone.utc).timestamp()
    header = format_datetime(datetime(2025, 3, 1, 12, 0, 42, tzinfo=timezone.utc), usegmt=True)
    assert parse_retry_after(header, now=lambda: now) == pytest.approx(42.0)


def test_retry_after_date_in_the_past_means_no_wait():
    now = datetime(2025, 3, 1, 12, 0, 0, tzinfo=timezone.utc).timestamp()
    assert parse_retry_after("Sat, 01 Mar 2025 11:00:00 GMT", now=lambda: now) == 0.0


@pytest.mark.parametrize("value", [None, "", "soon", "-5", "nan", "inf", "Mon, 99 Foo 2025"])
def test_unreadable_retry_after_gives_none(value):
    assert parse_retry_after(value) is None


# -- RetryPolicy ----------------------------------------------------------------


def test_backoff_doubles_from_base_up_to_the_cap_without_jitter():
    policy = RetryPolicy(base=1.0, cap=30.0, rng=lambda: 0.5)  # rng 0.5 -> jitter factor exactly 1
    assert [policy.delay(a) for a in range(1, 8)] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_backoff_jitter_stays_within_its_band_and_under_the_cap():
    low = RetryPolicy(jitter=0.2, rng=lambda: 0.0)
    high = RetryPolicy(jitter=0.2, rng=lambda: 0.999999)
    assert low.delay(2) == pytest.approx(1.6)
    assert high.delay(2) == pytest.approx(2.4, rel=1e-5)
    assert high.delay(10) == 30.0
    assert high.delay(10_000) == 30.0  # no overflow on absurd attempt numbers


def test_server_retry_after_wins_over_backoff_even_above_the_cap():
    policy = RetryPolicy(rng=lambda: 0.5)
    assert policy.delay(1, 7.0) == 7.0
    assert policy.delay(5, 45.0) == 45.0


def test_retry_policy_rejects_nonsense():
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(base=5.0, cap=1.0)


# -- LocalRateLimiter -----------------------------------------------------------


def test_local_limiter_allows_a_burst_then_spaces_calls_at_the_rate():
    clock = FakeClock()
    limiter = LocalRateLimiter(2.0, burst=3, clock=clock, sleep=clock.sleep)
    for _ in range(3):
        limiter.acquire()
    assert clock.sleeps == []
    limiter.acquire()
    limiter.acquire()
    assert clock.sleeps == pytest.approx([0.5, 0.5])


def test_local_limiter_refills_with_time_but_never_above_burst():
    clock = FakeClock()
    limiter = LocalRateLimiter(1.0, burst=2, clock=clock, sleep=clock.sleep)
    limiter.acquire()
    limiter.acquire()
    clock.now += 100.0  # a long idle period must not bank 100 tokens
    assert [limiter.try_acquire() for _ in range(3)] == [0.0, 0.0, pytest.approx(1.0)]


def test_local_limiter_is_thread_safe():
    clock = FakeClock()  # frozen time: exactly `burst` threads may pass
    limiter = LocalRateLimiter(1.0, burst=5, clock=clock, sleep=clock.sleep)
    results: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(20)

    def worker():
        start.wait()
        wait = limiter.try_acquire()
        with lock:
            results.append(wait)

    threads = [threading.Thread(target=worker) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(1 for w in results if w == 0.0) == 5


def test_local_limiter_rejects_nonsense():
    with pytest.raises(ValueError):
        LocalRateLimiter(0.0)
    with pytest.raises(ValueError):
        LocalRateLimiter(1.0, burst=0)


# -- RedisRateLimiter -----------------------------------------------------------


@pytest.fixture
def redis_key():
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"Redis at {REDIS_URL} is required in CI: {exc}")
        pytest.skip(f"Redis at {REDIS_URL} unreachable: {exc}")
    key = f"test:ratelimit:{uuid.uuid4().hex}"
    yield key
    client.delete(key)
    client.close()


def test_redis_limiter_shares_one_bucket_between_instances(redis_key):
    a = RedisRateLimiter(REDIS_URL, redis_key, 1.0, burst=2)
    b = RedisRateLimiter(REDIS_URL, redis_key, 1.0, burst=2)
    other = RedisRateLimiter(REDIS_URL, redis_key + ":other", 1.0, burst=2)
    assert a.try_acquire() == 0.0
    assert a.try_acquire() == 0.0
    wait = b.try_acquire()  # b never acquired, yet a emptied the shared bucket
    assert 0.9 < wait <= 1.0
    assert other.try_acquire() == 0.0


def test_redis_limiter_holds_two_concurrent_instances_to_the_rate(redis_key):
    rate = 20.0
    per_instance = 5
    limiters = [RedisRateLimiter(REDIS_URL, redis_key, rate, burst=1) for _ in range(2)]
    stamps: list[float] = []
    lock = threading.Lock()

    def worker(limiter):
        for _ in range(per_instance):
            limiter.acquire()
            with lock:
                stamps.append(time.monotonic())

    started = time.monotonic()
    threads = [threading.Thread(target=worker, args=(lim,)) for lim in limiters]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    elapsed = time.monotonic() - started
    total = 2 * per_instance
    assert len(stamps) == total
    # burst 1 then one token per 1/rate: (total - 1) / rate at least, minus timer slack
    assert elapsed >= (total - 1) / rate * 0.9


def test_redis_limiter_sleeps_through_the_injected_sleep(redis_key):
    sleeps: list[float] = []

    def sleep(seconds):
        sleeps.append(seconds)
        time.sleep(seconds)

    limiter = RedisRateLimiter(REDIS_URL, redis_key, 50.0, burst=1, sleep=sleep)
    limiter.acquire()
    limiter.acquire()
    assert sleeps and 0.0 < sum(sleeps) <= 0.03


def test_redis_limiter_reports_an_unreachable_redis_as_its_own_error():
    limiter = RedisRateLimiter("redis://127.0.0.1:1/0", "k", 1.0, socket_timeout=0.5)
    with pytest.raises(RateLimiterError):
        limiter.acquire()


# -- session --------------------------------------------------------------------


def test_session_sets_user_agent_and_leaves_retrying_to_the_policy():
    session = make_session(user_agent="ModelXRef-test/1")
    assert session.headers["User-Agent"] == "ModelXRef-test/1"
    assert session.get_adapter("https://civitai.com/").max_retries.total == 0
