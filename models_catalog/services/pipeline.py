"""The pipeline in one place: which stage follows which, and every message sent to the workers.

    registered / uploaded ──enqueue_hashing*──> [hashing] hash_local_file(s)
                                                    │ file_hashed (same task: the bytes are in the page cache)
                                                    v
                                                analyse ── file_analysed (same transaction: "done" has its matches)
                                                    v
    pushed / imported ───enqueue_identify──>    identify (local catalog) ──lookups_requested──> [lookups]
                                                    civitai_lookup_batch ── still gathering: batch_gathering
                                                    │ a by-hash answer stores a version
                                                    v
                                                versions_stored ──enqueue_previews──> [lookups] download_previews
    side stages, each a Job (services/jobs.py runs it): enqueue_job ──> hf_index_repo, hf_verify_local_dir,
    convert_checkpoint_job, run_file_action.   The reaper resends hashing through enqueue_hashing_now.

Every enqueue waits for the commit of the row that names it (transaction.on_commit, Zulip's rule),
except the `_now` sends of code that runs outside a transaction (the reaper, a batch task). Stages
end by calling the transition named here; what comes next is decided only in this module.
"""
from __future__ import annotations

import logging

from django.conf import settings
from django.core.cache import cache
from django.db import transaction

from models_catalog.services.enqueue import QueueUnavailable, hashing_chunks, hashing_send, hashing_send_chunks

log = logging.getLogger(__name__)

# While set, a batch run is on its way: finishing files do not queue another one.
BATCH_SCHEDULED_KEY = "modelxref:civitai-batch-scheduled"
BATCH_SCHEDULED_TTL = 120  # seconds; a run lost with its worker frees the key by then


# --- stage transitions ----------------------------------------------------------------------

def file_hashed(*, local_file_id: int) -> None:
    """hashed -> analyse, in the same task (the file was just read: its pages are cached)."""
    from models_catalog.services.analysis import local_file_analyse

    local_file_analyse(local_file_id=local_file_id)


def file_analysed(*, local_file_id: int) -> None:
    """analysed -> identify from the local catalog, inside analysis' transaction: a file is never
    seen "done" without its matches or its requested Civitai lookups."""
    from models_catalog import library_revision
    from models_catalog.services.identify import local_file_identify

    with library_revision.owner_writes(None):  # it may rematch other owners' files: library-wide
        local_file_identify(local_file_id=local_file_id)


def lookups_requested() -> None:
    """identify -> match by Civitai: one batch runner gathers the lookups of files hashed together."""
    enqueue_civitai_batch()


def batch_gathering(*, wait_seconds: float) -> None:
    """A batch run found files of its batch still being hashed: come back when they may be done."""
    enqueue_civitai_batch(countdown=wait_seconds)


def versions_stored(*, version_ids) -> None:
    """A by-hash answer stored a version: its previews are fetched, never in identification's way."""
    enqueue_previews(version_ids=version_ids)


# --- hashing --------------------------------------------------------------------------------

def enqueue_hashing(local_file_id: int) -> None:
    transaction.on_commit(lambda: hashing_send([local_file_id]))


def enqueue_hashing_now(local_file_id: int) -> bool:
    """For the reaper: send at once (no transaction to wait for). False when the broker is down."""
    try:
        hashing_send([local_file_id])
    except QueueUnavailable:
        return False
    return True


def enqueue_hashing_many(*, local_files) -> None:
    """Queue several rows: small files in chunks (one task each), big files and folders alone."""
    chunks = hashing_chunks(local_files=local_files)
    if chunks:
        # One callback for all of them: when the broker is down, every chunk is marked and counted, not
        # only the first (Django drops the callbacks after one that raised).
        transaction.on_commit(lambda: hashing_send_chunks(chunks))


# --- identification -------------------------------------------------------------------------

def enqueue_identify(local_file_id: int) -> None:
    """For rows that skip hashing and analysis (pushed, imported): identify them in a task of their own."""
    from workers.tasks import identify_local_file

    transaction.on_commit(lambda: identify_local_file.delay(local_file_id))


def enqueue_civitai_batch(*, countdown: float = 2) -> None:
    from workers.tasks import civitai_lookup_batch

    def send():
        # One scheduled run at a time; duplicates would be harmless (each run claims rows), only wasteful.
        if cache.add(BATCH_SCHEDULED_KEY, True, timeout=BATCH_SCHEDULED_TTL):
            civitai_lookup_batch.apply_async(countdown=countdown)

    transaction.on_commit(send)


def batch_run_started() -> None:
    cache.delete(BATCH_SCHEDULED_KEY)


# --- previews -------------------------------------------------------------------------------

def enqueue_previews(*, version_ids, retry_failed: bool = False) -> None:
    """Queue downloads after commit; a broker that is down only delays them to the hourly refresh."""
    from models_catalog.models import SourceImage

    ids = sorted(set(version_ids))
    if not retry_failed:  # nothing to fetch: no message (the whole-model refresh stores hundreds)
        ids = sorted(set(SourceImage.objects.filter(
            version_id__in=ids, state=SourceImage.State.LISTED, position__lt=settings.PREVIEWS_PER_VERSION,
        ).values_list("version_id", flat=True)))
    if not ids:
        return

    def send() -> None:
        from workers.tasks import download_previews
        for vid in ids:
            try:
                download_previews.delay(vid, retry_failed)
            except Exception:  # kombu raises several types; the listing stays and is retried later
                log.warning("preview download for version %s not queued (broker unreachable?)", vid)

    transaction.on_commit(send)


# --- jobs (Hub index and verify, conversions, file actions) ---------------------------------

def enqueue_job(job) -> None:
    """Queue a Job's task once the job is committed. A file action the broker cannot take is marked
    so on the job and raises QueueUnavailable (nothing was changed; the user starts it again)."""
    from models_catalog.models import Job
    from workers import tasks

    task = {Job.Kind.HF_INDEX: tasks.hf_index_repo, Job.Kind.HF_VERIFY: tasks.hf_verify_local_dir,
            Job.Kind.CONVERT: tasks.convert_checkpoint_job}.get(job.kind, tasks.run_file_action)
    job_id = job.pk
    if not job.is_file_action:
        transaction.on_commit(lambda: task.delay(job_id))
        return

    def send() -> None:
        try:
            task.delay(job_id)
        except Exception as exc:  # kombu wraps every transport failure differently; all mean "not sent"
            Job.objects.filter(pk=job_id, status=Job.Status.QUEUED).update(
                status=Job.Status.ERROR,
                message=f"the task queue is unreachable ({exc}): nothing was changed; start it again")
            raise QueueUnavailable(f"the task queue is unreachable ({exc}); the action was not started") from exc

    transaction.on_commit(send)
