"""Civitai's answers as data (PURE: no Django): the errors, the dataclasses and the parsers.

The parsers are tolerant of missing or null fields and strict where a wrong type would corrupt
what we store (ids, file lists); a malformed answer is `CivitaiMalformed`. workers/sources/civitai.py
is the client that asks and hands its answers to these; the tests parse stored answers directly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from workers import kinds

# Civitai's spellings; lookups of other spellings are folded onto these.
HASH_KINDS = kinds.CIVITAI_NAMES
_HASH_KIND_BY_LOWER = {kind.lower(): kind for kind in HASH_KINDS}
_HEX = kinds.HEX


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


def as_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def as_int(value: Any) -> int | None:
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


def malformed(what: str, data: Any) -> CivitaiError:
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
        raise malformed("file entry", data)
    metadata = data.get("metadata")
    if not isinstance(metadata, dict):
        metadata = {}
    return CivitaiFile(
        id=as_int(data.get("id")),
        name=as_str(data.get("name")) or "",
        size_kb=_float(data.get("sizeKB")),
        type=as_str(data.get("type")),
        format=as_str(metadata.get("format")),
        fp=as_str(metadata.get("fp")),
        size_kind=as_str(metadata.get("size")),
        pickle_scan_result=as_str(data.get("pickleScanResult")),
        pickle_scan_message=as_str(data.get("pickleScanMessage")),
        virus_scan_result=as_str(data.get("virusScanResult")),
        hashes=parse_hashes(data.get("hashes")),
        primary=data.get("primary") is True,
        download_url=as_str(data.get("downloadUrl")),
    )


def parse_version(
    data: Any, *, model_id: int | None = None, model: CivitaiModelSummary | None = None
) -> CivitaiVersion:
    """A version object from by-hash, /model-versions/{id} or a model's modelVersions[].

    Versions nested in a model lack `modelId`/`model`: pass the parent's.
    """
    if not isinstance(data, dict):
        raise malformed("model version", data)
    version_id = as_int(data.get("id"))
    if version_id is None:
        raise malformed("model version (no integer id)", data)
    own_model_id = as_int(data.get("modelId"))
    resolved_model_id = own_model_id if own_model_id is not None else model_id
    if resolved_model_id is None:
        raise malformed("model version (no integer modelId)", data)
    files_data = data.get("files")
    if files_data is None:
        files_data = []
    if not isinstance(files_data, list):
        raise malformed("model version (files is not a list)", data)
    # A null entry carries nothing; anything else that is not an object is corrupt.
    files = tuple(parse_file(f) for f in files_data if f is not None)
    model_data = data.get("model")
    if isinstance(model_data, dict):
        summary = CivitaiModelSummary(
            id=resolved_model_id,
            name=as_str(model_data.get("name")),
            type=as_str(model_data.get("type")),
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
        name=as_str(data.get("name")),
        base_model=as_str(data.get("baseModel")),
        base_model_type=as_str(data.get("baseModelType")),
        trained_words=trained_words,
        air=as_str(data.get("air")),
        description=as_str(data.get("description")),
        published_at=_datetime(data.get("publishedAt")),
        created_at=_datetime(data.get("createdAt")),
        updated_at=_datetime(data.get("updatedAt")),
        status=as_str(data.get("status")),
        model=summary,
        files=files,
        download_url=as_str(data.get("downloadUrl")),
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
        url = as_str(item.get("url"))
        if not url or not url.lower().startswith(("https://", "http://")):
            continue
        meta = item.get("meta")
        out.append(CivitaiImage(
            url=url, nsfw_level=max(0, as_int(item.get("nsfwLevel")) or 0),
            width=as_int(item.get("width")), height=as_int(item.get("height")),
            blurhash=as_str(item.get("hash")), type=as_str(item.get("type")),
            meta=meta if isinstance(meta, dict) else {},
        ))
    return tuple(out)


def parse_model(data: Any) -> CivitaiModel:
    if not isinstance(data, dict):
        raise malformed("model", data)
    model_id = as_int(data.get("id"))
    if model_id is None:
        raise malformed("model (no integer id)", data)
    summary = CivitaiModelSummary(
        id=model_id,
        name=as_str(data.get("name")),
        type=as_str(data.get("type")),
        nsfw=data.get("nsfw") is True,
    )
    versions_data = data.get("modelVersions")
    if versions_data is None:
        versions_data = []
    if not isinstance(versions_data, list):
        raise malformed("model (modelVersions is not a list)", data)
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
        description=as_str(data.get("description")),
        tags=tuple(tags),
        versions=versions,
        raw=data,
    )


def published_order(version: CivitaiVersion) -> tuple[float, int]:
    stamp = version.published_at.timestamp() if version.published_at else math.inf
    return (stamp, version.id)
