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
import math
import time
from dataclasses import dataclass, field
from datetime import timedelta
from functools import lru_cache
from urllib.parse import urlsplit

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from models_catalog.models import (
    CivitaiLookup,
    FileHashes,
    LocalFile,
    Match,
    Source,
    SourceVersion,
)
from models_catalog.services.catalog_store import CIVITAI_SITE, civitai_version_store
from models_catalog.services.matching import local_files_rematch
from workers.sources.civitai import CivitaiClient
from workers.sources.civitai_data import CivitaiError, CivitaiUnavailable
from workers.sources.http import LocalRateLimiter, RedisRateLimiter, RetryPolicy

log = logging.getLogger(__name__)

BATCH_SIZE = 100  # Civitai's limit for POST /model-versions/by-hash
IDS_BATCH_SIZE = 10_000  # POST /model-versions/by-hash/ids
CLAIM_TIMEOUT = timedelta(minutes=10)
# A lookup waits at most this long for the files still being hashed, so one registration of N files
# costs ceil(N/100) POSTs instead of one per file that happened to finish alone.
GATHER_FOR = timedelta(seconds=30)
GATHER_POLL_SECONDS = 2.0
# A queued/hashing row silent for this long belongs to a dead worker: do not wait for it.
LIVE_WITHIN = timedelta(minutes=2)
ERROR_RETRY_AFTER = timedelta(hours=1)
MAX_ATTEMPTS = 6  # retryable failures in a row before a lookup becomes a (later retried) error
LINKING_KINDS = ("exact", "renamed", "same-weights", "converted", "precision")
Kind = CivitaiLookup.Kind
State = CivitaiLookup.State


@lru_cache(maxsize=1)
def _rate_limiter():
    rate = settings.CIVITAI_REQUESTS_PER_SECOND
    if settings.REDIS_URL:
        # One budget for every worker process and host.
        return RedisRateLimiter(settings.REDIS_URL, "modelxref:ratelimit:civitai", rate, burst=2)
    return LocalRateLimiter(rate, burst=2)


CIVITAI_COM_API = "https://civitai.com/api/v1"
CIVITAI_RED_API = "https://civitai.red/api/v1"


def civitai_api_bases() -> list[str]:
    """The Civitai APIs to ask, in order; a later one is asked only for what the earlier ones missed."""
    if settings.CIVITAI_API_BASES:
        return list(settings.CIVITAI_API_BASES)
    first = settings.CIVITAI_API_BASE
    # A stand-in or proxy named in CIVITAI_API_BASE stays alone: tests and offline use ask nothing real.
    return [first, CIVITAI_RED_API] if first.rstrip("/") == CIVITAI_COM_API else [first]


def civitai_site(base_url: str, *, index: int = 0) -> str:
    """The web site whose pages match what `base_url` answered: links to a model go there.
    A real civitai.* API is its own origin; the first base behind a stand-in or proxy is civitai.com."""
    parts = urlsplit(base_url)
    host = (parts.hostname or "").lower()
    if host.endswith(("civitai.com", "civitai.red")):
        return f"{parts.scheme}://{parts.netloc}"
    return CIVITAI_SITE if index == 0 else f"{parts.scheme}://{parts.netloc}"


def civitai_clients(**overrides) -> list[CivitaiClient]:
    """One client per CIVITAI_API_BASES entry, in order (they share the rate limit)."""
    return [civitai_client(**{**overrides, "base_url": base}) for base in civitai_api_bases()]


def civitai_client(**overrides) -> CivitaiClient:
    options = {
        "base_url": settings.CIVITAI_API_BASE,
        "api_key": settings.CIVITAI_API_KEY or None,
        "timeout": (5, settings.CIVITAI_TIMEOUT_SECONDS),
        # At most one short in-process retry (a blip); a longer wait (Retry-After, a 429 storm) is a
        # task retry with a countdown, so a worker process is never parked sleeping.
        "retry": RetryPolicy(base=1.0, cap=2.0, max_attempts=2, max_wait=2.0),
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
    """The single-hash GETs worth making when the SHA256 is unknown to Civitai.

    Civitai stores every hash kind of every file it holds, so a SHA256 miss is
    a BLAKE3 (CRC32, AutoV2) miss too. Only AutoV3 can still hit: it covers
    the tensor data alone, so a safetensors file whose header was edited
    keeps it. Civitai computes AutoV3 only for safetensors.
    """
    wanted = []
    if local_format == "safetensors" and hashes.autov3:
        wanted.append((Kind.AUTOV3, hashes.autov3))
        embedded = (hashes.embedded_model_hash or "").lower()
        if len(embedded) == 64 and embedded[:12] != hashes.autov3:
            wanted.append((Kind.AUTOV3, embedded[:12]))  # some Civitai scanners trust the embedded value
    return wanted


def _linked_to_a_model(local_file: LocalFile) -> bool:
    """Already tied to a known model (exact, same weights, converted, precision): an AutoV3 GET adds nothing."""
    return Match.objects.filter(local_file=local_file, kind__in=LINKING_KINDS).exists()


def local_file_request_lookups(*, local_file: LocalFile) -> list[CivitaiLookup]:
    """Request the SHA256 lookup (BLAKE3 for imported rows without one), and the AutoV3
    fall-backs once the SHA256 is a known miss."""
    hashes = FileHashes.objects.filter(local_file=local_file).first()
    if hashes is None:
        return []
    if not hashes.sha256:
        return [civitai_lookup_request(kind=Kind.BLAKE3, value=hashes.blake3)] if hashes.blake3 else []
    rows = [civitai_lookup_request(kind=Kind.SHA256, value=hashes.sha256)]
    if rows[0].state == State.MISS and not _linked_to_a_model(local_file):
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
    wait_seconds: float | None = None  # set when the run chose to wait for files still being hashed
    # The other Civitai sites, asked only for the first one's misses: (client, site) in order.
    others: list = field(default_factory=list)
    site: str = CIVITAI_SITE  # the first client's site


def _claimable(now) -> Q:
    return (Q(state=State.PENDING) & (Q(not_before__isnull=True) | Q(not_before__lte=now))) | Q(
        state=State.RUNNING, claimed_at__lt=now - CLAIM_TIMEOUT)


def _claim(kind_filter: Q, limit: int) -> list[CivitaiLookup]:
    now = timezone.now()
    claimable = _claimable(now)
    ids = list(CivitaiLookup.objects.filter(claimable & kind_filter).order_by("created_at").values_list("pk", flat=True)[:limit])
    if not ids:
        return []
    # Compare-and-set: rows another runner claimed between the read and now are skipped.
    CivitaiLookup.objects.filter(claimable, pk__in=ids).update(state=State.RUNNING, claimed_at=now)
    return list(CivitaiLookup.objects.filter(pk__in=ids, state=State.RUNNING, claimed_at=now))


def _release(rows: list[CivitaiLookup], exc: CivitaiUnavailable) -> None:
    """Back to pending with a not-before time; after MAX_ATTEMPTS a final error (with the reason),
    which the hourly refresh asks again after ERROR_RETRY_AFTER."""
    now = timezone.now()
    for row in rows:
        attempts = row.attempts + 1
        if attempts >= MAX_ATTEMPTS:
            CivitaiLookup.objects.filter(pk=row.pk, state=State.RUNNING).update(
                state=State.ERROR, attempts=attempts, checked_at=now, claimed_at=None, not_before=None,
                last_error=f"Civitai could not be asked after {attempts} attempts: {exc}")
            continue
        wait = exc.retry_after if exc.retry_after is not None else min(3600.0, 30.0 * 2 ** (attempts - 1))
        CivitaiLookup.objects.filter(pk=row.pk, state=State.RUNNING).update(
            state=State.PENDING, not_before=now + timedelta(seconds=wait), attempts=attempts,
            last_error=f"Civitai unavailable, will retry: {exc}",
        )


def _finish(row: CivitaiLookup, *, state: str, version=None, error: str = "", duration: float = 0.0) -> None:
    CivitaiLookup.objects.filter(pk=row.pk).update(
        state=state, version=version, last_error=error, checked_at=timezone.now(),
        duration_ms=int(duration * 1000), attempts=row.attempts + 1, claimed_at=None, not_before=None,
    )


def hashing_in_progress() -> bool:
    """Files still queued, hashing or being read by a live worker: their lookups are on the way."""
    live = timezone.now() - LIVE_WITHIN
    unfinished = (LocalFile.Status.QUEUED, LocalFile.Status.HASHING, LocalFile.Status.ANALYSING)
    return LocalFile.objects.filter(status__in=unfinished).filter(
        Q(heartbeat_at__gte=live) | Q(updated_at__gte=live)).exists()


def gather_wait() -> float | None:
    """Seconds to wait before asking, or None to ask now.

    Ask now when a full POST is pending, when the oldest pending SHA256 has
    waited GATHER_FOR, or when no file is still being hashed."""
    now = timezone.now()
    pending = CivitaiLookup.objects.filter(_claimable(now), kind=Kind.SHA256)
    oldest = pending.order_by("created_at").values_list("created_at", flat=True).first()
    if oldest is None or now - oldest >= GATHER_FOR:
        return None
    if pending[:BATCH_SIZE].count() >= BATCH_SIZE or not hashing_in_progress():
        return None
    return min(GATHER_POLL_SECONDS, max(0.5, (oldest + GATHER_FOR - now).total_seconds()))


def civitai_lookup_run(*, client: CivitaiClient | None = None, others: list[CivitaiClient] | None = None,
                       max_rounds: int = 1000, gather: bool = False) -> LookupRun:
    """Resolve every claimable pending lookup, rematching the files each answer concerns.

    With `gather`, first wait (return with `wait_seconds` set) while files are
    still being hashed, so their SHA256 travel in one request. `others` (default: the rest of
    CIVITAI_API_BASES when no client is given) are asked only for what `client` misses.
    Raises CivitaiUnavailable (rows released) to be retried later."""
    run = LookupRun()
    if gather:
        run.wait_seconds = gather_wait()
        if run.wait_seconds is not None:
            return run
    if client is None:
        clients = civitai_clients()
        client = clients[0]
        others = clients[1:] if others is None else others
    run.site = civitai_site(client.base_url)
    run.others = [(c, civitai_site(c.base_url, index=i)) for i, c in enumerate(others or (), 1)]
    for _ in range(max_rounds):
        now = timezone.now()
        pending_sha256 = CivitaiLookup.objects.filter(_claimable(now), kind=Kind.SHA256)[:BATCH_SIZE + 1].count()
        if pending_sha256:
            # Within a run too: a part batch waits for the files still being hashed (AutoV3 GETs go on).
            wait = gather_wait() if gather and pending_sha256 < BATCH_SIZE else None
            if wait is None:
                if pending_sha256 > BATCH_SIZE and _ids_pays_off():
                    # ids-only (10,000 a request), then fetch only the hit versions we do not hold.
                    _run_sha256_ids(client, _claim(Q(kind=Kind.SHA256), IDS_BATCH_SIZE), run)
                else:
                    _run_sha256_batch(client, _claim(Q(kind=Kind.SHA256), BATCH_SIZE), run)
                continue
            run.wait_seconds = wait
        single = _claim(~Q(kind=Kind.SHA256), 1)
        if not single:
            break
        _run_single(client, single[0], run)
    return run


def _ids_pays_off() -> bool:
    """by-hash/ids costs 1 + one fetch per 100 hit versions; POSTs cost one per 100 hashes. Judge by the
    recent hit rate: a library Civitai mostly knows is cheaper in POSTs (no history: try ids)."""
    recent = list(CivitaiLookup.objects.filter(kind=Kind.SHA256, state__in=(State.HIT, State.MISS))
                  .order_by("-checked_at").values_list("state", flat=True)[:500])
    hit_rate = sum(state == State.HIT for state in recent) / len(recent) if recent else 0.0
    n = min(IDS_BATCH_SIZE, CivitaiLookup.objects.filter(_claimable(timezone.now()), kind=Kind.SHA256).count())
    return 1 + math.ceil(hit_rate * n / BATCH_SIZE) < math.ceil(n / BATCH_SIZE)


def _ask(client: CivitaiClient, run: LookupRun, rows: list[CivitaiLookup], call, *args):
    """One client call for `rows`: its HTTP attempts counted; when Civitai is unavailable the rows go
    back to pending with a not-before time (see _release) and the error goes on to the task's retry."""
    before = client.calls
    try:
        return call(*args)
    except CivitaiUnavailable as exc:
        _release(rows, exc)
        raise
    finally:
        run.requests += client.calls - before


def _run_sha256_batch(client: CivitaiClient, batch: list[CivitaiLookup], run: LookupRun) -> None:
    started = time.monotonic()
    try:
        found = _ask(client, run, batch, client.versions_by_sha256, [row.value for row in batch])
    except CivitaiUnavailable:
        raise
    except CivitaiError as exc:
        _fail_all(batch, exc, run)
        return
    found = {k.upper(): v for k, v in found.items()}
    sites = {v.id: run.site for v in found.values()}
    _ask_other_sites(run, batch, found, sites)
    _store_sha256_answers(batch, found, {}, run, time.monotonic() - started, sites=sites)


def _ask_other_sites(run: LookupRun, batch: list[CivitaiLookup], found: dict, sites: dict) -> None:
    """The first site's misses, asked of the next sites in turn (batch POSTs): a hit adds to `found`
    (value -> version) and says in `sites` (version id -> site) who answered. One request per 100 misses
    per further site; hits cost nothing more."""
    for other, site in run.others:
        missing = [row.value for row in batch if row.value not in found]
        if not missing:
            return
        try:
            more = _ask(other, run, batch, other.versions_by_sha256, missing)
        except CivitaiUnavailable:
            raise
        except CivitaiError as exc:
            log.warning("Civitai at %s failed (%s): its misses stay misses for now", site, exc)
            continue
        for value, version in more.items():
            found[value.upper()] = version
            sites.setdefault(version.id, site)


def _run_sha256_ids(client: CivitaiClient, batch: list[CivitaiLookup], run: LookupRun) -> None:
    """ids-only first (one request for up to 10,000 hashes); then full versions only for the hit
    versions we do not hold fresh, one representative hash per version (a version lists many files)."""
    started = time.monotonic()
    try:
        refs = _ask(client, run, batch, client.version_refs_by_sha256, [row.value for row in batch])
    except CivitaiUnavailable:
        raise
    except CivitaiError as exc:
        # An endpoint that answers oddly must not cost the lookups: ask the plain batch way instead.
        log.warning("Civitai by-hash/ids failed (%s); asking in batches of %d", exc, BATCH_SIZE)
        for start in range(0, len(batch), BATCH_SIZE):
            _run_sha256_batch(client, batch[start:start + BATCH_SIZE], run)
        return
    refs = {k.upper(): v for k, v in refs.items()}
    held = _fresh_civitai_versions({ref.version_id for values in refs.values() for ref in values})
    representative: dict[int, str] = {}
    for value, value_refs in refs.items():
        for ref in value_refs:
            if ref.version_id not in held:
                representative.setdefault(ref.version_id, value)
    try:
        fetched = _ask(client, run, batch, client.versions_for_sha256, sorted(set(representative.values()))) \
            if representative else []
    except CivitaiUnavailable:
        raise
    except CivitaiError as exc:
        _fail_all(batch, exc, run)
        return
    fetched_by_id = {v.id: v for v in fetched}
    found, kept = {}, {}
    for value, value_refs in refs.items():
        # The oldest published version wins, as with Civitai's own single GET.
        options = [(fetched_by_id[r.version_id].published_at, r.version_id, fetched_by_id[r.version_id], None)
                   for r in value_refs if r.version_id in fetched_by_id]
        options += [(held[r.version_id].published_at, r.version_id, None, held[r.version_id])
                    for r in value_refs if r.version_id in held]
        if not options:
            continue  # reported by the ids call, gone by the fetch (unpublished meanwhile): a miss
        _when, _id, civitai_version, stored_version = min(options, key=lambda o: (o[0] is None, o[0] or 0, o[1]))
        if civitai_version is not None:
            found[value] = civitai_version
        else:
            kept[value] = stored_version
    sites = {v.id: run.site for v in found.values()}
    _ask_other_sites(run, [row for row in batch if row.value not in kept], found, sites)
    _store_sha256_answers(batch, found, kept, run, time.monotonic() - started, sites=sites)


def _fresh_civitai_versions(version_ids: set[int]) -> dict[int, "SourceVersion"]:
    """Civitai version id -> the SourceVersion we stored whole within the refresh time."""
    if not version_ids:
        return {}
    fresh_after = timezone.now() - timedelta(seconds=settings.CIVITAI_HIT_REFRESH_SECONDS)
    rows = SourceVersion.objects.filter(model__source=Source.CIVITAI, external_id__in=[str(i) for i in version_ids],
                                        fetched_at__gte=fresh_after)
    return {int(v.external_id): v for v in rows}


def _fail_all(batch: list[CivitaiLookup], exc: CivitaiError, run: LookupRun) -> None:
    for row in batch:
        _finish(row, state=State.ERROR, error=str(exc))
    run.errors += len(batch)


def _store_sha256_answers(batch, found: dict, held: dict, run: LookupRun, duration: float, *, sites: dict) -> None:
    """One transaction per batch: answers, versions, the rematch and the AutoV3 requests they lead to,
    so nobody ever sees a file whose answer is stored but whose match is not."""
    stored = {}  # one version often answers many hashes: store it once
    misses = []
    with transaction.atomic():
        for row in batch:
            version = found.get(row.value)
            if version is not None:
                if version.id not in stored:
                    stored[version.id] = civitai_version_store(version=version, site=sites.get(version.id, run.site))
                _finish(row, state=State.HIT, version=stored[version.id], duration=duration)
                run.hits += 1
            elif row.value in held:
                _finish(row, state=State.HIT, version=held[row.value], duration=duration)
                run.hits += 1
            else:
                _finish(row, state=State.MISS, duration=duration)
                misses.append(row.value)
                run.misses += 1
            run.resolved_values.add(row.value)
        _rematch_for_values([row.value for row in batch])
        _request_fallbacks_for_sha256(misses)


def _request_fallbacks_for_sha256(values: list[str]) -> None:
    for hashes in FileHashes.objects.filter(sha256__in=[v.lower() for v in values]).select_related("local_file"):
        if _linked_to_a_model(hashes.local_file):
            continue
        for kind, value in fallback_lookups_for(hashes, local_format=hashes.local_file.format):
            civitai_lookup_request(kind=kind, value=value)


def _rematch_for_values(values: list[str]) -> None:
    values = [v.lower() for v in values]
    q = Q(sha256__in=values) | Q(blake3__in=values) | Q(autov3__in=[v for v in values if len(v) == 12])
    ids = set(FileHashes.objects.filter(q).values_list("local_file_id", flat=True))
    if ids:
        local_files_rematch(local_file_ids=ids)


def _run_single(client: CivitaiClient, row: CivitaiLookup, run: LookupRun) -> None:
    started = time.monotonic()
    try:
        version = _ask(client, run, [row], client.version_by_hash, row.value)
    except CivitaiUnavailable:
        raise
    except CivitaiError as exc:
        _finish(row, state=State.ERROR, error=str(exc))
        run.errors += 1
        return
    site = run.site
    for other, other_site in run.others:  # the first site's miss, asked of the next ones (one GET each)
        if version is not None:
            break
        try:
            version, site = _ask(other, run, [row], other.version_by_hash, row.value), other_site
        except CivitaiUnavailable:
            raise
        except CivitaiError as exc:
            log.warning("Civitai at %s failed (%s)", other_site, exc)
    duration = time.monotonic() - started
    with transaction.atomic():
        if version is None:
            _finish(row, state=State.MISS, duration=duration)
            run.misses += 1
        else:
            _finish(row, state=State.HIT, version=civitai_version_store(version=version, site=site), duration=duration)
            run.hits += 1
        run.resolved_values.add(row.value)
        _rematch_for_values([row.value])


def civitai_refresh_stale() -> int:
    """Mark stale answers pending again (the scheduled refresh), and final errors after
    ERROR_RETRY_AFTER: an odd answer once must not leave a file unidentified for good.
    Returns how many rows are pending now."""
    now = timezone.now()
    stale = Q(state=State.HIT, checked_at__lt=now - timedelta(seconds=settings.CIVITAI_HIT_REFRESH_SECONDS)) | Q(
        state=State.MISS, checked_at__lt=now - timedelta(seconds=settings.CIVITAI_MISS_CACHE_SECONDS)
    ) | Q(state=State.ERROR, checked_at__lt=now - ERROR_RETRY_AFTER)
    CivitaiLookup.objects.filter(stale).exclude(kind=Kind.ANY).update(state=State.PENDING, not_before=None)
    # Pending rows whose runner was lost (a worker died before running it) are picked up here too.
    return CivitaiLookup.objects.filter(_claimable(now)).exclude(kind=Kind.ANY).count()


def civitai_models_complete(*, client: CivitaiClient | None = None, limit: int = 500) -> int:
    """Fetch whole models (description, tags, every version and file) for Civitai models known only
    from a by-hash answer. Runs on the hourly schedule, not during identification, so identifying a
    library costs only the by-hash requests. Returns how many models were completed."""
    from models_catalog.models import SourceModel

    rows = SourceModel.objects.filter(source=Source.CIVITAI, raw={})[:limit]
    return _models_refresh(rows, client=client)


def civitai_models_check_updates(*, client: CivitaiClient | None = None, limit: int = 2000) -> int:
    """Ask again, every CIVITAI_UPDATES_CHECK_SECONDS, for the versions of the Civitai models some local
    file is identified as: a newer published version (or one in early access) shows as an update.
    One GET /models?ids= per 100 models. Returns how many models were checked."""
    from models_catalog.identity import IDENTIFYING_KINDS
    from models_catalog.models import SourceModel

    due = timezone.now() - timedelta(seconds=settings.CIVITAI_UPDATES_CHECK_SECONDS)
    held = Match.objects.filter(kind__in=IDENTIFYING_KINDS, source_file__version__model__source=Source.CIVITAI)
    rows = (SourceModel.objects.filter(pk__in=held.values("source_file__version__model_id"))
            .filter(Q(versions_checked_at__isnull=True) | Q(versions_checked_at__lt=due))
            .order_by(F("versions_checked_at").asc(nulls_first=True), "pk")[:limit])
    return _models_refresh(rows, client=client)


def _models_refresh(rows, *, client: CivitaiClient | None) -> int:
    """Fetch `rows` (SourceModels) whole from the site that answered for each, store every version and
    mark the newest published one. Models a site no longer lists keep what we knew (checked all the same)."""
    from models_catalog.models import SourceModel

    rows = [r for r in rows if str(r.external_id).isdigit()]
    if not rows:
        return 0
    if client is not None:
        by_site = {None: (client, civitai_site(client.base_url), rows)}
    else:
        clients = civitai_clients()
        sites = {civitai_site(c.base_url, index=i): c for i, c in enumerate(clients)}
        by_site = {}
        for row in rows:
            # A model only the later site answered for is unknown to the first one: ask where it lives.
            site = row.site if row.site in sites else next(iter(sites))
            by_site.setdefault(site, (sites[site], site, []))[2].append(row)
    done = 0
    for site_client, site, site_rows in by_site.values():
        ids = [int(r.external_id) for r in site_rows]
        for start in range(0, len(ids), 100):
            chunk = ids[start:start + 100]
            for model in site_client.models(chunk):
                with transaction.atomic():
                    stored = [civitai_version_store(version=version, model=model, site=site)
                              for version in model.versions]
                    newest = max(stored, key=lambda v: (v.published_at is not None, v.published_at or 0, v.pk),
                                 default=None)
                    SourceModel.objects.filter(source=Source.CIVITAI, external_id=str(model.id)).update(
                        description=model.description or "", raw=model.raw, newest_version=newest)
                done += 1
            SourceModel.objects.filter(source=Source.CIVITAI, external_id__in=[str(i) for i in chunk]).update(
                versions_checked_at=timezone.now())
    return done
