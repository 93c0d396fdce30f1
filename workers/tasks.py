"""Thin Celery tasks: an id in, a service call, a retry policy. Services do the work."""
from __future__ import annotations

from celery import shared_task


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def hash_local_file(local_file_id: int) -> None:
    from models_catalog.services.hashing import local_file_hash

    local_file_hash(local_file_id=local_file_id)


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def hash_local_files(local_file_ids: list[int]) -> None:
    """A chunk of small files (see enqueue.hashing_chunks): one task each would cost more than the hashing."""
    from models_catalog.services.hashing import local_files_hash

    local_files_hash(local_file_ids=local_file_ids)


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def identify_local_file(local_file_id: int) -> None:
    from models_catalog.services.identify import local_file_identify

    local_file_identify(local_file_id=local_file_id)


@shared_task(bind=True, acks_late=True, ignore_result=True, max_retries=None)
def civitai_lookup_batch(self) -> None:
    from models_catalog.services.identify import civitai_batch_and_rematch
    from models_catalog.services.jobs import retry_countdown
    from models_catalog.services.pipeline import batch_gathering, batch_run_started
    from workers.sources.civitai_data import CivitaiUnavailable

    batch_run_started()
    try:
        # Eager runs (tests, scripts) cannot wait for other files: they are hashed inline, one by one.
        run = civitai_batch_and_rematch(gather=not self.request.is_eager)
    except CivitaiUnavailable as exc:
        # The claimed lookups went back to pending with a not-before time; come back then.
        raise self.retry(exc=exc, countdown=retry_countdown(exc)) from exc
    if run.wait_seconds is not None:
        batch_gathering(wait_seconds=run.wait_seconds)  # files of the same batch are still being hashed


@shared_task(ignore_result=True)
def civitai_refresh_stale() -> None:
    from django.conf import settings

    from models_catalog.services.civitai_lookup import (
        civitai_models_check_updates,
        civitai_models_complete,
        civitai_refresh_stale,
    )
    from models_catalog.services.pipeline import enqueue_civitai_batch, enqueue_previews
    from models_catalog.services.previews import previews_retry_due
    from workers.sources.civitai_data import CivitaiError

    if not settings.CIVITAI_ENABLED:
        return
    enqueue_previews(version_ids=previews_retry_due(), retry_failed=True)
    if civitai_refresh_stale():  # stale answers, old errors, or pending rows whose run was lost
        enqueue_civitai_batch()
    try:
        civitai_models_complete()
        civitai_models_check_updates()  # newer versions of what users hold ("v2.0 available")
    except CivitaiError:
        pass  # the next hourly run tries again; nothing was half-written (one transaction per model)


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def download_previews(version_id: int, retry_failed: bool = False) -> None:
    """Thumbnails of a version's first images; failures are stored on the rows, not raised (the hourly
    refresh tries them again), so this task has no retry policy of its own."""
    from models_catalog.services.previews import version_previews_download

    version_previews_download(version_id=version_id, retry_failed=retry_failed)


@shared_task(bind=True, acks_late=True, ignore_result=True, max_retries=10)
def hf_index_repo(self, job_id: int) -> None:
    from models_catalog.services.huggingface import hf_index_job_run
    from models_catalog.services.jobs import is_transient, retry_countdown

    try:
        hf_index_job_run(job_id=job_id)
    except Exception as exc:
        if not is_transient(exc):
            raise
        raise self.retry(exc=exc, countdown=retry_countdown(exc)) from exc


@shared_task(bind=True, acks_late=True, ignore_result=True, max_retries=10)
def hf_verify_local_dir(self, job_id: int) -> None:
    from models_catalog.services.hf_verify_job import hf_verify_job_run
    from models_catalog.services.jobs import is_transient, retry_countdown

    try:
        hf_verify_job_run(job_id=job_id)
    except Exception as exc:
        if not is_transient(exc):
            raise
        raise self.retry(exc=exc, countdown=retry_countdown(exc)) from exc


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def convert_checkpoint_job(job_id: int) -> None:
    """Convert a checkpoint to safetensors (a Job). Failures are stored on the job in words; there is
    nothing to retry: a refused or changed file stays so until the user asks again."""
    from models_catalog.services.convert import convert_job_run

    convert_job_run(job_id=job_id)


@shared_task(ignore_result=True)
def local_files_reap() -> None:
    """Rows whose worker died, or whose message never reached the broker, are sent again."""
    from models_catalog.services.reaper import local_files_reap as reap

    reap()


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def run_file_action(job_id: int) -> None:
    """A duplicate action (hard link, quarantine, restore, purge): every file is checked again when it runs,
    so a redelivered message only skips what is done."""
    from models_catalog.services.file_action_jobs import file_action_job_run

    file_action_job_run(job_id=job_id)
