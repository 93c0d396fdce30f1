"""Asking Civitai about local hashes, economically and without losing a lookup.

Each hash asked is a CivitaiLookup row. Files only *request* lookups
(pending rows); one batch runner claims up to 100 pending SHA256 rows per
POST, then the single-hash fall-backs (AutoV3, BLAKE3) one GET each. Misses
are remembered for CIVITAI_MISS_CACHE_SECONDS, hits are refreshed after
CIVITAI_HIT_REFRESH_SECONDS. A 429/5xx/timeout puts the claimed rows back
to pending with a not-before time, so the next run (the task retries itself)
picks them up again.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import timedelta
from functools import lru_cache

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from models_catalog.models import CivitaiLookup, FileHashes, LocalFile
from models_catalog.services.catalog_store import civitai_version_store
from workers.sources.civitai import CivitaiClient, CivitaiError, CivitaiUnavailable
from workers.sources.http import LocalRateLimiter, RedisRateLimiter, RetryPolicy

log = logging.getLogger(__name__)

BATCH_SIZE = 100  # Civitai's limit for POST /model-versions/by-hash
CLAIM_TIMEOUT = timedelta(minutes=10)
Kind = CivitaiLookup.Kind
State = CivitaiLookup.State


@lru_cache(maxsize=1)
def _rate_limiter():
    rate = settings.CIVITAI_REQUESTS_PER_SECOND
    if settings.REDIS_URL:
        # One budget for every worker process and host.
        return RedisRateLimiter(settings.REDIS_URL, "modelxref:ratelimit:civitai", rate, burst=2)
    return LocalRateLimiter(rate, burst=2)


def civitai_client(**overrides) -> CivitaiClient:
    options = {
        "base_url": settings.CIVITAI_API_BASE,
        "api_key": settings.CIVITAI_API_KEY or None,
        "timeout": (5, settings.CIVITAI_TIMEOUT_SECONDS),
        # Short in-process retries; anything longer is a task retry, not a parked worker.
        "retry": RetryPolicy(base=1.0, cap=30.0, max_attempts=4, max_wait=30.0),
        "rate_limiter": _rate_limiter(),
    }
    options.update(overrides)
    return CivitaiClient(**options)


# --- requesting lookups -------------------------------------------------------


def is_fresh(row: CivitaiLookup, now) -> bool:
    if row.checked_at is None or row.state not in (State.HIT, State.MISS):
        return False
    ttl = settings.CIVITAI_HIT_REFRESH_SECONDS if row.state == State.HIT else settings.CIVITAI_MISS_CACHE_SECONDS
    return now - row.checked_at < timedelta(seconds=ttl)


def civitai_lookup_request(*, kind: str, value: str) -> CivitaiLookup:
    """Make sure `value` will be asked (unless a fresh answer is on record). Returns the row."""
    value = value.upper()
    now = timezone.now()
    row, created = CivitaiLookup.objects.get_or_create(kind=kind, value=value)
    if created or row.state == State.PENDING or row.state == State.RUNNING or is_fresh(row, now):
        return row
    # Stale hit/miss, or an earlier final error: ask again (compare-and-set on the state we saw).
    CivitaiLookup.objects.filter(pk=row.pk, state=row.state).update(state=State.PENDING, not_before=None)
    row.refresh_from_db()
    return row


def fallback_lookups_for(hashes: FileHashes, *, local_format: str) -> list[tuple[str, str]]:
    """The single-hash GETs worth making when the SHA256 is unknown to Civitai."""
    wanted = []
    # Civitai computes AutoV3 only for safetensors: for other containers it is noise.
    if local_format == "safetensors" and hashes.autov3:
        wanted.append((Kind.AUTOV3, hashes.autov3))
        embedded = (hashes.embedded_model_hash or "").lower()
        if len(embedded) == 64 and embedded[:12] != hashes.autov3:
            wanted.append((Kind.AUTOV3, embedded[:12]))  # some Civitai scanners trust the embedded value
    if hashes.blake3:
        wanted.append((Kind.BLAKE3, hashes.blake3))
    return wanted


def local_file_request_lookups(*, local_file: LocalFile) -> list[CivitaiLookup]:
    """Request the SHA256 lookup, and the fall-backs once the SHA256 is a known miss."""
    hashes = FileHashes.objects.filter(local_file=local_file).first()
    if hashes is None or not hashes.sha256:
        return []
    rows = [civitai_lookup_request(kind=Kind.SHA256, value=hashes.sha256)]
    if rows[0].state == State.MISS:
        rows += [civitai_lookup_request(kind=k, value=v) for k, v in fallback_lookups_for(hashes, local_format=local_file.format)]
    return rows


# --- running lookups ----------------------------------------------------------


@dataclass
class LookupRun:
    requests: int = 0
    hits: int = 0
    misses: int = 0
    errors: int = 0
    resolved_values: set[str] = field(default_factory=set)


def _claim(kind_filter: Q, limit: int) -> list[CivitaiLookup]:
    now = timezone.now()
    claimable = (
        Q(state=State.PENDING) & (Q(not_before__isnull=True) | Q(not_before__lte=now))
    ) | Q(state=State.RUNNING, claimed_at__lt=now - CLAIM_TIMEOUT)
    ids = list(CivitaiLookup.objects.filter(claimable & kind_filter).order_by("created_at").values_list("pk", flat=True)[:limit])
    if not ids:
        return []
    # Compare-and-set: rows another runner claimed between the read and now are skipped.
    CivitaiLookup.objects.filter(claimable, pk__in=ids).update(state=State.RUNNING, claimed_at=now)
    return list(CivitaiLookup.objects.filter(pk__in=ids, state=State.RUNNING, claimed_at=now))


def _release(rows: list[CivitaiLookup], exc: CivitaiUnavailable) -> None:
    wait = exc.retry_after if exc.retry_after is not None else 30.0
    for row in rows:
        CivitaiLookup.objects.filter(pk=row.pk, state=State.RUNNING).update(
            state=State.PENDING, not_before=timezone.now() + timedelta(seconds=wait),
            attempts=row.attempts + 1, last_error=f"Civitai unavailable, will retry: {exc}",
        )


def _finish(row: CivitaiLookup, *, state: str, version=None, error: str = "", duration: float = 0.0) -> None:
    CivitaiLookup.objects.filter(pk=row.pk).update(
        state=state, version=version, last_error=error, checked_at=timezone.now(),
        duration_ms=int(duration * 1000), attempts=row.attempts + 1, claimed_at=None, not_before=None,
    )


def _request_fallbacks_for_sha256(values: list[str]) -> None:
    for hashes in FileHashes.objects.filter(sha256__in=[v.lower() for v in values]).select_related("local_file"):
        for kind, value in fallback_lookups_for(hashes, local_format=hashes.local_file.format):
            civitai_lookup_request(kind=kind, value=value)


def civitai_lookup_run(*, client: CivitaiClient | None = None, max_rounds: int = 1000) -> LookupRun:
    """Resolve every claimable pending lookup. Raises CivitaiUnavailable (rows released) to be retried later."""
    client = client or civitai_client()
    run = LookupRun()
    for _ in range(max_rounds):
        batch = _claim(Q(kind=Kind.SHA256), BATCH_SIZE)
        if batch:
            _run_sha256_batch(client, batch, run)
            continue
        single = _claim(~Q(kind=Kind.SHA256), 1)
        if not single:
            break
        _run_single(client, single[0], run)
    return run


def _run_sha256_batch(client: CivitaiClient, batch: list[CivitaiLookup], run: LookupRun) -> None:
    started = time.monotonic()
    try:
        found = client.versions_by_sha256([row.value for row in batch])
    except CivitaiUnavailable as exc:
        _release(batch, exc)
        raise
    except CivitaiError as exc:
        for row in batch:
            _finish(row, state=State.ERROR, error=str(exc))
        run.errors += len(batch)
        return
    run.requests += 1
    duration = time.monotonic() - started
    found_upper = {k.upper(): v for k, v in found.items()}
    stored = {}  # one version often answers many hashes: store it once
    misses = []
    with transaction.atomic():  # one commit per batch, not per row
        for row in batch:
            version = found_upper.get(row.value)
            if version is None:
                _finish(row, state=State.MISS, duration=duration)
                misses.append(row.value)
                run.misses += 1
            else:
                if version.id not in stored:
                    stored[version.id] = civitai_version_store(version=version)
                _finish(row, state=State.HIT, version=stored[version.id], duration=duration)
                run.hits += 1
            run.resolved_values.add(row.value)
    _request_fallbacks_for_sha256(misses)


def _run_single(client: CivitaiClient, row: CivitaiLookup, run: LookupRun) -> None:
    started = time.monotonic()
    try:
        version = client.version_by_hash(row.value)
    except CivitaiUnavailable as exc:
        _release([row], exc)
        raise
    except CivitaiError as exc:
        _finish(row, state=State.ERROR, error=str(exc))
        run.errors += 1
        return
    run.requests += 1
    duration = time.monotonic() - started
    with transaction.atomic():
        if version is None:
            _finish(row, state=State.MISS, duration=duration)
            run.misses += 1
        else:
            _finish(row, state=State.HIT, version=civitai_version_store(version=version), duration=duration)
            run.hits += 1
    run.resolved_values.add(row.value)


def civitai_refresh_stale() -> int:
    """Mark stale answers pending again (the scheduled refresh). Returns how many."""
    now = timezone.now()
    stale = Q(state=State.HIT, checked_at__lt=now - timedelta(seconds=settings.CIVITAI_HIT_REFRESH_SECONDS)) | Q(
        state=State.MISS, checked_at__lt=now - timedelta(seconds=settings.CIVITAI_MISS_CACHE_SECONDS)
    )
    return CivitaiLookup.objects.filter(stale).update(state=State.PENDING, not_before=None)


def civitai_models_complete(*, client: CivitaiClient | None = None, limit: int = 500) -> int:
    """Fetch whole models (description, tags, every version and file) for Civitai models known only
    from a by-hash answer. Runs on the hourly schedule, not during identification, so identifying a
    library costs only the by-hash requests. Returns how many models were completed."""
    from models_catalog.models import Source, SourceModel

    ids = [int(x) for x in SourceModel.objects.filter(source=Source.CIVITAI, raw={}).values_list("external_id", flat=True)[:limit]
           if str(x).isdigit()]
    if not ids:
        return 0
    client = client or civitai_client()
    done = 0
    for start in range(0, len(ids), 100):
        for model in client.models(ids[start:start + 100]):
            with transaction.atomic():
                for version in model.versions:
                    civitai_version_store(version=version, model=model)
                if not model.versions:
                    SourceModel.objects.filter(source=Source.CIVITAI, external_id=str(model.id)).update(
                        description=model.description or "", raw=model.raw)
            done += 1
    return done
