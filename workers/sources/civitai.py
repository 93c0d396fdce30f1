"""Civitai REST API client (https://civitai.com/api/v1 or a stand-in).

PURE: no Django. Every failure surfaces as `CivitaiError`; `CivitaiUnavailable`
(retryable=True) means "try again later", so a Celery task can reschedule the
lookup instead of recording a miss. A miss is `None` / absent, never an error.
"""
from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Iterable, Iterator, Sequence

import requests

from workers import kinds

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

# Civitai's spellings; lookups of other spellings are folded onto these.
HASH_KINDS = kinds.CIVITAI_NAMES
_HASH_KIND_BY_LOWER = {kind.lower(): kind for kind in HASH_KINDS}
# Only the lengths of the kinds by-hash accepts can match (workers/kinds.py).
_BY_HASH_LENGTHS = kinds.BY_HASH_LENGTHS
_HEX = kinds.HEX
_SHA256 = re.compile(r"[0-9A-Fa-f]{64}")


class CivitaiError(Exception):
    """Anything that went wrong talking to Civitai.

    `retryable` is False for final answers (other 4xx, bad input); asking
    again would not help. Malformed success bodies are retryable (CivitaiMalformed).
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
        url: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after
        self.url = url


class CivitaiUnavailable(CivitaiError):
    """Retries ran out on 429/5xx/timeouts/challenge pages: reschedule after `retry_after`."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        url: str | None = None,
    ) -> None:
        super().__init__(message, status=status, retryable=True, retry_after=retry_after, url=url)


class CivitaiMalformed(CivitaiUnavailable):
    """A success status whose body is not the shape the API documents (a maintenance or proxy
    page in JSON, a half-deployed change). Usually passing: asked again later, like a 5xx."""


class CivitaiInputError(CivitaiError, ValueError):
    """The caller passed something that cannot be a valid query (bad hash, bad id)."""


# ---------------------------------------------------------------------------
# Data


@dataclass(frozen=True)
class CivitaiFile:
    id: int | None
    name: str
    size_kb: float | None
    type: str | None
    format: str | None  # metadata.format: SafeTensor | PickleTensor | Other
    fp: str | None  # metadata.fp: fp16 | fp32 | bf16 ...
    size_kind: str | None  # metadata.size: full | pruned
    pickle_scan_result: str | None
    pickle_scan_message: str | None
    virus_scan_result: str | None
    hashes: dict[str, str]  # kind (Civitai spelling) -> UPPER hex; only kinds present
    primary: bool
    download_url: str | None


@dataclass(frozen=True)
class CivitaiImage:
    url: str
    nsfw_level: int  # 0 when Civitai gave none
    width: int | None
    height: int | None
    blurhash: str | None
    type: str | None  # image | video
    meta: dict  # generation parameters as given (callers cap what they store)


@dataclass(frozen=True)
class CivitaiModelSummary:
    id: int
    name: str | None
    type: str | None
    nsfw: bool


@dataclass(frozen=True)
class CivitaiVersion:
    id: int
    model_id: int
    name: str | None
    base_model: str | None
    base_model_type: str | None
    trained_words: tuple[str, ...]
    air: str | None
    description: str | None
    published_at: datetime | None
    created_at: datetime | None
    updated_at: datetime | None
    status: str | None
    model: CivitaiModelSummary
    files: tuple[CivitaiFile, ...]
    download_url: str | None
    raw: dict = field(repr=False, compare=False)
    images: tuple[CivitaiImage, ...] = ()


@dataclass(frozen=True)
class CivitaiModel:
    id: int
    name: str | None
    type: str | None
    nsfw: bool
    description: str | None
    tags: tuple[str, ...]
    versions: tuple[CivitaiVersion, ...]
    raw: dict = field(repr=False, compare=False)


@dataclass(frozen=True)
class CivitaiVersionRef:
    """One row of POST /model-versions/by-hash/ids."""

    version_id: int
    model_id: int | None
    sha256: str


@dataclass(frozen=True)
class CivitaiRequest:
    """One HTTP attempt, handed to `on_request` so the app can record outcome and duration."""

    method: str
    url: str
    attempt: int
    status: int | None
    outcome: str  # ok | not_found | retry | unavailable | error
    duration: float
    error: str | None = None


# ---------------------------------------------------------------------------
# Parsing: tolerant of missing/null fields, strict where a wrong type would
# corrupt what we store (ids, file lists).


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _datetime(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


parse_datetime = _datetime  # for callers reading fields this module does not model (earlyAccessEndsAt)


def _malformed(what: str, data: Any) -> CivitaiError:
    snippet = repr(data)
    if len(snippet) > 200:
        snippet = snippet[:200] + "..."
    return CivitaiMalformed(f"Civitai sent a malformed {what}: {snippet}")


def parse_hashes(data: Any) -> dict[str, str]:
    if not isinstance(data, dict):
        return {}
    hashes: dict[str, str] = {}
    for kind, value in data.items():
        if not isinstance(kind, str) or not isinstance(value, str):
            continue
        value = value.strip()
        if not value or not _HEX.fullmatch(value):
            continue
        hashes[_HASH_KIND_BY_LOWER.get(kind.lower(), kind)] = value.upper()
    return hashes


def parse_file(data: Any) -> CivitaiFile:
    if not isinstance(data, dict):
        raise _malformed("file entry", data)
    metadata = data.get("metadata")
    if not isinstance(metadata, dict):
        metadata = {}
    return CivitaiFile(
        id=_int(data.get("id")),
        name=_str(data.get("name")) or "",
        size_kb=_float(data.get("sizeKB")),
        type=_str(data.get("type")),
        format=_str(metadata.get("format")),
        fp=_str(metadata.get("fp")),
        size_kind=_str(metadata.get("size")),
        pickle_scan_result=_str(data.get("pickleScanResult")),
        pickle_scan_message=_str(data.get("pickleScanMessage")),
        virus_scan_result=_str(data.get("virusScanResult")),
        hashes=parse_hashes(data.get("hashes")),
        primary=data.get("primary") is True,
        download_url=_str(data.get("downloadUrl")),
    )


def parse_version(
    data: Any, *, model_id: int | None = None, model: CivitaiModelSummary | None = None
) -> CivitaiVersion:
    """A version object from by-hash, /model-versions/{id} or a model's modelVersions[].

    Versions nested in a model lack `modelId`/`model`: pass the parent's.
    """
    if not isinstance(data, dict):
        raise _malformed("model version", data)
    version_id = _int(data.get("id"))
    if version_id is None:
        raise _malformed("model version (no integer id)", data)
    own_model_id = _int(data.get("modelId"))
    resolved_model_id = own_model_id if own_model_id is not None else model_id
    if resolved_model_id is None:
        raise _malformed("model version (no integer modelId)", data)
    files_data = data.get("files")
    if files_data is None:
        files_data = []
    if not isinstance(files_data, list):
        raise _malformed("model version (files is not a list)", data)
    # A null entry carries nothing; anything else that is not an object is corrupt.
    files = tuple(parse_file(f) for f in files_data if f is not None)
    model_data = data.get("model")
    if isinstance(model_data, dict):
        summary = CivitaiModelSummary(
            id=resolved_model_id,
            name=_str(model_data.get("name")),
            type=_str(model_data.get("type")),
            nsfw=model_data.get("nsfw") is True,
        )
    elif model is not None:
        summary = model
    else:
        summary = CivitaiModelSummary(id=resolved_model_id, name=None, type=None, nsfw=False)
    words = data.get("trainedWords")
    trained_words = tuple(w for w in words if isinstance(w, str)) if isinstance(words, list) else ()
    return CivitaiVersion(
        id=version_id,
        model_id=resolved_model_id,
        name=_str(data.get("name")),
        base_model=_str(data.get("baseModel")),
        base_model_type=_str(data.get("baseModelType")),
        trained_words=trained_words,
        air=_str(data.get("air")),
        description=_str(data.get("description")),
        published_at=_datetime(data.get("publishedAt")),
        created_at=_datetime(data.get("createdAt")),
        updated_at=_datetime(data.get("updatedAt")),
        status=_str(data.get("status")),
        model=summary,
        files=files,
        download_url=_str(data.get("downloadUrl")),
        raw=data,
        images=parse_images(data.get("images")),
    )


def parse_images(data: Any) -> tuple[CivitaiImage, ...]:
    """A version's images[]; entries that are not objects with an http(s) url are skipped, not fatal:
    a broken preview list must not lose the identification that came with it."""
    if not isinstance(data, list):
        return ()
    out = []
    for item in data:
        if not isinstance(item, dict):
            continue
        url = _str(item.get("url"))
        if not url or not url.lower().startswith(("https://", "http://")):
            continue
        meta = item.get("meta")
        out.append(CivitaiImage(
            url=url, nsfw_level=max(0, _int(item.get("nsfwLevel")) or 0),
            width=_int(item.get("width")), height=_int(item.get("height")),
            blurhash=_str(item.get("hash")), type=_str(item.get("type")),
            meta=meta if isinstance(meta, dict) else {},
        ))
    return tuple(out)


def parse_model(data: Any) -> CivitaiModel:
    if not isinstance(data, dict):
        raise _malformed("model", data)
    model_id = _int(data.get("id"))
    if model_id is None:
        raise _malformed("model (no integer id)", data)
    summary = CivitaiModelSummary(
        id=model_id,
        name=_str(data.get("name")),
        type=_str(data.get("type")),
        nsfw=data.get("nsfw") is True,
    )
    versions_data = data.get("modelVersions")
    if versions_data is None:
        versions_data = []
    if not isinstance(versions_data, list):
        raise _malformed("model (modelVersions is not a list)", data)
    versions = tuple(
        parse_version(v, model_id=model_id, model=summary) for v in versions_data if v is not None
    )
    tags_data = data.get("tags")
    tags: list[str] = []
    if isinstance(tags_data, list):
        for tag in tags_data:
            # Older payloads used {"name": ...} objects, current ones plain strings.
            name = tag.get("name") if isinstance(tag, dict) else tag
            if isinstance(name, str):
                tags.append(name)
    return CivitaiModel(
        id=model_id,
        name=summary.name,
        type=summary.type,
        nsfw=summary.nsfw,
        description=_str(data.get("description")),
        tags=tuple(tags),
        versions=versions,
        raw=data,
    )


def _published_order(version: CivitaiVersion) -> tuple[float, int]:
    stamp = version.published_at.timestamp() if version.published_at else math.inf
    return (stamp, version.id)


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
                    if current is None or _published_order(version) < _published_order(current):
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
                raise _malformed("batch by-hash answer (not a list)", data)
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
                raise _malformed("by-hash/ids answer (not a list)", data)
            for row in data:
                if not isinstance(row, dict):
                    continue
                version_id = _int(row.get("modelVersionId"))
                sha = _str(row.get("hash"))
                if version_id is None or sha is None:
                    raise _malformed("by-hash/ids row", row)
                ref = CivitaiVersionRef(version_id=version_id, model_id=_int(row.get("modelId")), sha256=sha.upper())
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
                raise _malformed("models list answer (no items list)", data)
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
