"""Civitai REST API client (https://civitai.com/api/v1 or a stand-in); what it returns and raises
is defined in workers/sources/civitai_data.py.

PURE: no Django. Every failure surfaces as `CivitaiError`; `CivitaiUnavailable`
(retryable=True) means "try again later", so a Celery task can reschedule the
lookup instead of recording a miss. A miss is `None` / absent, never an error.
"""
from __future__ import annotations

import json
import logging
import re
import threading
import time
from typing import Any, Callable, Iterable, Iterator, Sequence

import requests

from workers import kinds
from workers.sources.civitai_data import (
    CivitaiError,
    CivitaiInputError,
    CivitaiModel,
    CivitaiRequest,
    CivitaiUnavailable,
    CivitaiVersion,
    CivitaiVersionRef,
    as_int,
    as_str,
    malformed,
    parse_model,
    parse_version,
    published_order,
)
from workers.sources.http import (
    NullRateLimiter,
    RateLimiter,
    RateLimiterError,
    RetryPolicy,
    make_session,
    parse_retry_after,
)

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://civitai.com/api/v1"
BATCH_BY_HASH_MAX = 100
BATCH_IDS_MAX = 10_000
MODELS_IDS_MAX = 100

# Only the lengths of the kinds by-hash accepts can match (workers/kinds.py).
_BY_HASH_LENGTHS = kinds.BY_HASH_LENGTHS
_HEX = kinds.HEX
_SHA256 = re.compile(r"[0-9A-Fa-f]{64}")


# ---------------------------------------------------------------------------
# Input validation


def _normalize_sha256(value: Any) -> str:
    if not isinstance(value, str) or not _SHA256.fullmatch(value.strip()):
        raise CivitaiInputError(f"not a 64-hex SHA256: {value!r:.80}")
    return value.strip().upper()


def _normalize_any_hash(value: Any) -> str:
    if not isinstance(value, str):
        raise CivitaiInputError(f"hash must be a string, got {type(value).__name__}")
    text = value.strip()
    if not _HEX.fullmatch(text) or len(text) not in _BY_HASH_LENGTHS:
        raise CivitaiInputError(
            f"not a Civitai hash ({kinds.BY_HASH_LENGTHS_TEXT} hex chars): {value!r:.80}"
        )
    return text.upper()


def _positive_id(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise CivitaiInputError(f"{what} must be a positive integer, got {value!r:.40}")
    return value


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _unique(items: Iterable[Any]) -> list[Any]:
    return list(dict.fromkeys(items))


# ---------------------------------------------------------------------------
# Client


class _Retry(Exception):
    def __init__(self, message: str, *, status: int | None, retry_after: float | None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.retry_after = retry_after


_NOT_FOUND = object()


def _looks_like_html(response: requests.Response) -> bool:
    ctype = response.headers.get("Content-Type", "").lower()
    if "html" in ctype:
        return True
    head = response.content[:512].lstrip().lower()
    return head.startswith(b"<!doctype html") or head.startswith(b"<html")


def _decode_json(response: requests.Response) -> tuple[bool, Any]:
    if not response.content:
        return False, None
    try:
        return True, json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        return False, None


def _error_text(data: Any) -> str | None:
    if isinstance(data, dict):
        for key in ("error", "message"):
            value = data.get(key)
            if isinstance(value, str):
                return value
            if value is not None:
                return json.dumps(value)[:300]
    return None


class CivitaiClient:
    """Talks to one Civitai API base URL with retries, rate limiting and timeouts.

    Thread-safe as far as `requests.Session` is (fine for Celery's prefork and
    threads pools when each worker builds its own client).
    """

    def __init__(
        self,
        *,
        base_url: str = DEFAULT_BASE_URL,
        api_key: str | None = None,
        session: requests.Session | None = None,
        timeout: float | tuple[float, float] = (5, 30),
        retry: RetryPolicy = RetryPolicy(),
        rate_limiter: RateLimiter | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        on_request: Callable[[CivitaiRequest], None] | None = None,
    ) -> None:
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise CivitaiInputError(f"Civitai base URL must be http(s)://..., got {base_url!r}")
        if timeout is None:
            raise CivitaiInputError("every Civitai call needs a timeout")
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key or None
        self._session = session if session is not None else make_session()
        self._timeout = timeout
        self._retry = retry
        self._rate_limiter: RateLimiter = rate_limiter if rate_limiter is not None else NullRateLimiter()
        self._sleep = sleep
        self._clock = clock
        self.on_request = on_request
        self._calls_lock = threading.Lock()
        self.calls = 0  # HTTP attempts made, retries included

    def __repr__(self) -> str:  # never show the key
        return f"CivitaiClient(base_url={self.base_url!r}, api_key={'set' if self._api_key else None})"

    # -- public lookups ----------------------------------------------------

    def versions_by_sha256(self, sha256s: Sequence[str]) -> dict[str, CivitaiVersion]:
        """Batch lookup; keys are the input strings that matched, misses are absent.

        When one SHA256 belongs to several versions the oldest published wins,
        as with the single GET.
        """
        if isinstance(sha256s, str):
            raise CivitaiInputError("versions_by_sha256 takes a sequence of hashes, not one string")
        normalized = {value: _normalize_sha256(value) for value in sha256s}
        wanted = set(normalized.values())
        best: dict[str, CivitaiVersion] = {}
        for version in self.versions_for_sha256(list(wanted)):
            for f in version.files:
                sha = f.hashes.get("SHA256")
                if sha in wanted:
                    current = best.get(sha)
                    if current is None or published_order(version) < published_order(current):
                        best[sha] = version
        return {value: best[upper] for value, upper in normalized.items() if upper in best}

    def versions_for_sha256(self, sha256s: Sequence[str]) -> list[CivitaiVersion]:
        """Every version POST /model-versions/by-hash returns for these hashes (100 a request),
        including all versions that share one hash."""
        if isinstance(sha256s, str):
            raise CivitaiInputError("versions_for_sha256 takes a sequence of hashes, not one string")
        seen: dict[int, CivitaiVersion] = {}
        for chunk in _chunks(_unique(_normalize_sha256(v) for v in sha256s), BATCH_BY_HASH_MAX):
            data = self._call("POST", "/model-versions/by-hash", json_body=list(chunk))
            if not isinstance(data, list):
                raise malformed("batch by-hash answer (not a list)", data)
            for entry in data:
                if entry is not None:
                    version = parse_version(entry)
                    seen.setdefault(version.id, version)
        return list(seen.values())

    def version_by_hash(self, hash: str) -> CivitaiVersion | None:
        """GET by any hash kind Civitai stores (AutoV1/V2/V3, SHA256, CRC32, BLAKE3)."""
        value = _normalize_any_hash(hash)
        data = self._call("GET", f"/model-versions/by-hash/{value}", not_found_ok=True)
        if data is _NOT_FOUND:
            return None
        return parse_version(data)

    def version_refs_by_sha256(self, sha256s: Sequence[str]) -> dict[str, tuple[CivitaiVersionRef, ...]]:
        """POST /model-versions/by-hash/ids: ids only, up to 10,000 hashes per call."""
        if isinstance(sha256s, str):
            raise CivitaiInputError("version_refs_by_sha256 takes a sequence of hashes, not one string")
        normalized = {value: _normalize_sha256(value) for value in sha256s}
        found: dict[str, list[CivitaiVersionRef]] = {}
        for chunk in _chunks(_unique(normalized.values()), BATCH_IDS_MAX):
            data = self._call("POST", "/model-versions/by-hash/ids", json_body=list(chunk))
            if not isinstance(data, list):
                raise malformed("by-hash/ids answer (not a list)", data)
            for row in data:
                if not isinstance(row, dict):
                    continue
                version_id = as_int(row.get("modelVersionId"))
                sha = as_str(row.get("hash"))
                if version_id is None or sha is None:
                    raise malformed("by-hash/ids row", row)
                ref = CivitaiVersionRef(version_id=version_id, model_id=as_int(row.get("modelId")), sha256=sha.upper())
                if ref not in found.setdefault(ref.sha256, []):
                    found[ref.sha256].append(ref)
        return {value: tuple(found[upper]) for value, upper in normalized.items() if upper in found}

    def version(self, version_id: int) -> CivitaiVersion | None:
        vid = _positive_id(version_id, "version_id")
        data = self._call("GET", f"/model-versions/{vid}", not_found_ok=True)
        return None if data is _NOT_FOUND else parse_version(data)

    def model(self, model_id: int) -> CivitaiModel | None:
        mid = _positive_id(model_id, "model_id")
        data = self._call("GET", f"/models/{mid}", not_found_ok=True)
        return None if data is _NOT_FOUND else parse_model(data)

    def models(self, ids: Sequence[int]) -> list[CivitaiModel]:
        """Known models refreshed in bulk, in input order; ids Civitai lacks are absent."""
        wanted = _unique(_positive_id(i, "model id") for i in ids)
        by_id: dict[int, CivitaiModel] = {}
        for chunk in _chunks(wanted, MODELS_IDS_MAX):
            # nsfw defaults to false on /models and silently hides NSFW models.
            params = {"ids": ",".join(str(i) for i in chunk), "limit": str(MODELS_IDS_MAX), "nsfw": "true"}
            data = self._call("GET", "/models", params=params)
            items = data.get("items") if isinstance(data, dict) else None
            if not isinstance(items, list):
                raise malformed("models list answer (no items list)", data)
            for item in items:
                if item is None:
                    continue
                parsed = parse_model(item)
                by_id[parsed.id] = parsed
        return [by_id[i] for i in wanted if i in by_id]

    # -- plumbing ----------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers

    def _record(self, record: CivitaiRequest) -> None:
        if self.on_request is None:
            return
        try:
            self.on_request(record)
        except Exception:  # a metrics hook must not turn a good lookup into a failure
            log.exception("Civitai on_request hook failed")

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        json_body: Any = None,
        not_found_ok: bool = False,
    ) -> Any:
        url = self.base_url + path
        attempts = self._retry.max_attempts
        for attempt in range(1, attempts + 1):
            try:
                self._rate_limiter.acquire()
            except RateLimiterError as exc:
                raise CivitaiUnavailable(f"rate limiter unavailable: {exc}", url=url) from exc
            with self._calls_lock:
                self.calls += 1
            started = self._clock()
            status: int | None = None
            try:
                try:
                    response = self._session.request(
                        method,
                        url,
                        params=params,
                        json=json_body,
                        headers=self._headers(),
                        timeout=self._timeout,
                        allow_redirects=True,
                    )
                except requests.Timeout as exc:
                    raise _Retry(f"timed out: {exc}", status=None, retry_after=None) from exc
                except (
                    requests.ConnectionError,
                    requests.exceptions.ChunkedEncodingError,
                    requests.exceptions.ContentDecodingError,
                ) as exc:
                    raise _Retry(f"connection failed: {exc}", status=None, retry_after=None) from exc
                except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                        requests.exceptions.InvalidSchema) as exc:
                    raise CivitaiError(
                        f"Civitai base URL looks wrong ({self.base_url}): {exc}", url=url
                    ) from exc
                except requests.RequestException as exc:
                    raise CivitaiError(f"Civitai request failed: {exc}", url=url) from exc
                status = response.status_code
                result = self._interpret(response, url=url, not_found_ok=not_found_ok)
            except _Retry as retry:
                final_attempt = attempt >= attempts
                suggested = self._retry.delay(attempt + 1 if final_attempt else attempt, retry.retry_after)
                give_up = final_attempt or suggested > self._retry.max_wait
                self._record(CivitaiRequest(
                    method, url, attempt, retry.status, "unavailable" if give_up else "retry",
                    self._clock() - started, retry.message,
                ))
                if give_up:
                    raise CivitaiUnavailable(
                        f"Civitai unavailable after {attempt} attempt(s) ({method} {url}): {retry.message}",
                        status=retry.status, retry_after=suggested, url=url,
                    ) from retry
                self._sleep(suggested)
                continue
            except CivitaiError as exc:
                self._record(CivitaiRequest(
                    method, url, attempt, exc.status if exc.status is not None else status, "error",
                    self._clock() - started, str(exc),
                ))
                raise
            self._record(CivitaiRequest(
                method, url, attempt, status, "not_found" if result is _NOT_FOUND else "ok",
                self._clock() - started, None,
            ))
            return result
        raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover

    def _interpret(self, response: requests.Response, *, url: str, not_found_ok: bool) -> Any:
        status = response.status_code
        is_json, data = _decode_json(response)
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        if 200 <= status < 300:
            if is_json:
                return data
            kind = "an HTML page (Cloudflare challenge?)" if _looks_like_html(response) else "a non-JSON body"
            raise _Retry(f"HTTP {status} with {kind}", status=status, retry_after=retry_after)
        if status == 404:
            if is_json:
                if not_found_ok:
                    return _NOT_FOUND
                raise CivitaiError(
                    f"Civitai 404: {_error_text(data) or 'not found'}", status=status, url=url
                )
            raise CivitaiError(
                f"Civitai answered an HTML 404 for {url}: the base URL looks wrong "
                f"(expected something like {DEFAULT_BASE_URL})",
                status=status, url=url,
            )
        if status in (408, 429) or status >= 500:
            detail = _error_text(data) if is_json else ("HTML page" if _looks_like_html(response) else None)
            raise _Retry(
                f"HTTP {status}" + (f": {detail}" if detail else ""), status=status, retry_after=retry_after
            )
        if status == 403 and (response.headers.get("cf-mitigated") or (not is_json and _looks_like_html(response))):
            # Cloudflare's bot challenge: a later attempt (or a later task) may pass.
            raise _Retry("HTTP 403 challenge page", status=status, retry_after=retry_after)
        message = _error_text(data) if is_json else response.text[:200]
        raise CivitaiError(f"Civitai HTTP {status}: {message or response.reason}", status=status, url=url)
