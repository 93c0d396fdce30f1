"""What a push uses unless told otherwise: limits, timeouts, retries, where its files live (PURE).

The server imports MAX_BATCH from here too: one limit for the client and the server.
"""
from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

from workers.push.report import PushUsageError
from workers.sources.http import RetryPolicy

PUSH_ENDPOINT = "/api/v1/files/push/"
MAX_BATCH = 500  # the server refuses more records per request
DEFAULT_BATCH = 200
# Django refuses bodies above DATA_UPLOAD_MAX_MEMORY_SIZE (10 MiB here); a
# batch of hostile pickles with 200 findings each could get close.
MAX_BODY_BYTES = 4 * 1024 * 1024
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 120.0  # the server stores a whole batch in one request
DEFAULT_RETRY = RetryPolicy(base=1.0, cap=30.0, max_attempts=6, max_wait=300.0)


def _cache_dir() -> Path:
    return Path.home() / ".cache" / "modelxref"


def default_cache_path() -> Path:
    return Path(os.environ.get("MODELXREF_PUSH_CACHE") or _cache_dir() / "hash-cache.sqlite3")


def default_state_path(server: str) -> Path:
    netloc = urlsplit(server).netloc or "server"
    safe = "".join(c if c.isalnum() or c in ".-" else "_" for c in netloc)
    return _cache_dir() / f"push-state-{safe}.json"


def normalise_server(server: str) -> str:
    parts = urlsplit(server.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise PushUsageError(f"--server must be an http(s) URL such as https://modelxref.example.org, got {server!r}")
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
