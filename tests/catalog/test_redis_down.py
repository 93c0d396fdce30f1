"""With REDIS_URL set, Redis holds the throttle counters and the task queue. When it stops
answering, the API keeps answering: throttles let requests through (and log it), and an
endpoint that must queue work says 503 in the one error format instead of a bare 500."""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import time

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from rest_framework.test import APIClient
from rest_framework.throttling import SimpleRateThrottle

from config.celery import app as celery_app
from tests.model_builders import write_safetensors
from tests.factories import push_record as _record, error_of, token_client  # noqa: F401

# Work is queued on commit: these tests need real commits, not a rolled-back test transaction.
pytestmark = pytest.mark.django_db(transaction=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def broker_at(url: str):
    """Point the Celery app at another broker for a while (its pools are per broker URL)."""
    conf = celery_app.conf
    saved = conf.broker_url, conf.broker_transport_options
    conf.broker_url, conf.broker_transport_options = url, {}
    celery_app._pool = celery_app.amqp._producer_pool = None
    try:
        yield
    finally:
        conf.broker_url, conf.broker_transport_options = saved
        celery_app._pool = celery_app.amqp._producer_pool = None


def redis_cache(url: str) -> dict:
    return {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": url,
                        "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2}}}


@pytest.fixture
def redis_down(settings):
    """REDIS_URL points at a port where nothing listens: cache and broker both unreachable."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    settings.CACHES = redis_cache(url)
    with broker_at(url):
        yield url


def assert_service_unavailable(resp) -> None:
    assert resp.status_code == 503, resp.content
    err = error_of(resp)
    assert err["code"] == "service_unavailable" and "task queue is unreachable" in err["message"]
    assert resp["Retry-After"] == "30"


def test_api_answers_when_the_throttle_cache_is_down_and_says_so_in_the_log(redis_down, user, caplog):
    client = token_client(user)
    with caplog.at_level(logging.WARNING, logger="models_catalog.throttling"):
        assert client.get("/api/v1/files/").status_code == 200
        assert client.get("/api/v1/lookup/", {"q": "0123456789"}).status_code == 200  # user + lookup throttles
    assert "cache is unreachable" in caplog.text
    resp = APIClient().post("/api/v1/auth/token/", {"username": "alice", "password": "pw-alice-123"}, format="json")
    assert resp.status_code == 200  # the auth throttle fails open too


def test_register_answers_503_when_the_broker_is_down(redis_down, user, model_root):
    f = write_safetensors(model_root / "a.safetensors")
    resp = token_client(user).post("/api/v1/files/register/", {"paths": [str(f)]}, format="json")
    assert_service_unavailable(resp)


def test_upload_answers_503_when_the_broker_is_down(redis_down, user, model_root):
    upload = SimpleUploadedFile("m.safetensors", write_safetensors(model_root / "m.safetensors").read_bytes())
    resp = token_client(user).post("/api/v1/files/upload/", {"file": upload}, format="multipart")
    assert_service_unavailable(resp)


def test_push_answers_503_when_the_broker_is_down(redis_down, user, tmp_path):
    record = _record(tmp_path, "pushed.safetensors", b"p" * 64)
    resp = token_client(user).post("/api/v1/files/push/", {"host": "gpu-box", "files": [record]}, format="json")
    assert_service_unavailable(resp)


def test_upload_page_keeps_the_file_and_says_it_waits_when_the_broker_is_down(redis_down, user, model_root):
    """The upload is stored: the page must not say "try again" (that would store it twice)."""
    from models_catalog.models import LocalFile

    browser = Client()
    browser.force_login(user)
    upload = SimpleUploadedFile("m.safetensors", write_safetensors(model_root / "m.safetensors").read_bytes())
    resp = browser.post("/upload/", {"file": upload}, follow=True)
    [row] = LocalFile.objects.filter(origin="uploaded")
    assert resp.redirect_chain == [(f"/files/{row.pk}/", 302)] and resp.status_code == 200
    page = resp.content.decode()
    assert "Uploaded m.safetensors, but the task queue is unreachable" in page and "waiting for the queue" in page
    assert row.status == "queued" and row.enqueued_at is None and "waiting for the queue" in row.error
    upload = SimpleUploadedFile("n.safetensors", write_safetensors(model_root / "n.safetensors").read_bytes())
    resp = browser.post("/upload/", {"file": upload}, HTTP_ACCEPT="application/json")  # the page's own uploader
    assert resp.status_code == 201 and resp.json()["name"] == "n.safetensors"


@pytest.fixture
def redis_server(tmp_path):
    """A redis-server of this test's own, on a free port; stop() and start() it at will."""
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is required in CI", pytrace=False)
        pytest.skip("redis-server is not installed")
    port = free_port()

    class Server:
        url = f"redis://127.0.0.1:{port}/0"
        proc = None

        def start(self):
            self.proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                          "--appendonly", "no", "--dir", str(tmp_path)],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return
                time.sleep(0.05)
            raise RuntimeError("redis-server did not start")

        def stop(self):
            self.proc.terminate()
            self.proc.wait(timeout=10)

    server = Server()
    server.start()
    yield server
    if server.proc.poll() is None:
        server.stop()


def test_throttles_count_in_redis_and_let_requests_through_once_it_stops(redis_server, settings, user, model_root,
                                                                         monkeypatch):
    settings.CACHES = redis_cache(redis_server.url)
    monkeypatch.setitem(SimpleRateThrottle.THROTTLE_RATES, "user", "3/minute")
    client = token_client(user)
    f = write_safetensors(model_root / "a.safetensors")
    with broker_at(redis_server.url):
        assert [client.get("/api/v1/files/").status_code for _ in range(4)] == [200, 200, 200, 429]
        redis_server.stop()
        assert client.get("/api/v1/files/").status_code == 200  # no counter to check: let it through
        assert_service_unavailable(client.post("/api/v1/files/register/", {"paths": [str(f)]}, format="json"))


def test_in_redis_a_throttle_counts_its_window_instead_of_keeping_its_history(redis_server, settings, user,
                                                                            monkeypatch):
    """One integer a window, whatever the rate (DRF's history would hold every request's timestamp), and
    a 429 that says when the window ends."""
    import redis

    settings.CACHES = redis_cache(redis_server.url)
    monkeypatch.setitem(SimpleRateThrottle.THROTTLE_RATES, "user", "3/minute")
    client = token_client(user)
    assert [client.get("/api/v1/files/").status_code for _ in range(4)] == [200, 200, 200, 429]
    raw = redis.Redis.from_url(redis_server.url)
    [key] = raw.keys("*throttle_user_*:count")
    assert int(raw.get(key)) == 4 and 0 < raw.ttl(key) <= 60
    resp = client.get("/api/v1/files/")
    assert resp.status_code == 429 and 0 < int(resp["Retry-After"]) <= 60
    assert 0 < error_of(resp)["detail"]["wait_seconds"] <= 60


def test_a_throttle_counter_left_without_an_expiry_gets_one(redis_server, settings, user, monkeypatch):
    """A counter that lost its expiry (written by hand, or by an older release) must not throttle forever."""
    import redis

    settings.CACHES = redis_cache(redis_server.url)
    monkeypatch.setitem(SimpleRateThrottle.THROTTLE_RATES, "user", "3/minute")
    client = token_client(user)
    assert client.get("/api/v1/files/").status_code == 200
    raw = redis.Redis.from_url(redis_server.url)
    [key] = raw.keys("*throttle_user_*:count")
    raw.set(key, 1000)  # no expiry, over the rate
    resp = client.get("/api/v1/files/")
    assert resp.status_code == 429 and 0 < raw.ttl(key) <= 60 and 0 < int(resp["Retry-After"]) <= 60
