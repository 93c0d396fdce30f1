"""Running a Job: claim it once, end it explained, retry only what a later try can fix.

Every job runner (Hub index and verify, conversion, duplicate actions) goes through `job_run`:
- **Claim by compare-and-set** (UPDATE ... WHERE status=queued): tasks are `acks_late`, so a
  message can come again while its first delivery still runs, or after it finished; that one
  does nothing. A running job whose heartbeat (`updated_at`, bumped while it runs) is older than
  STALLED_AFTER_SECONDS lost its worker (kill -9, OOM) and may be claimed again.
- **Transient errors** (the source says a later identical call may succeed: 429, 5xx, timeouts)
  put the job back to queued with the reason and go up to the task, which retries after
  `retry_countdown`: the one rule shared with the Civitai batch.
- **Anything unexpected** is logged with its traceback and stored on the job as "internal error
  ...", then re-raised so Celery shows the task failed: never a job left "running", never a
  swallowed exception.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from django.db.models import Q
from django.utils import timezone

from models_catalog.models import Job
from models_catalog.services.heartbeat import HEARTBEAT_SECONDS, STALLED_AFTER_SECONDS, beating

log = logging.getLogger(__name__)

# A task retry waits what the source asked (Retry-After), else RETRY_DEFAULT, within these bounds:
# never a hot loop, never a retry parked for more than ten minutes.
RETRY_MIN_SECONDS = 5
RETRY_MAX_SECONDS = 600
RETRY_DEFAULT_SECONDS = 30


class JobFailed(Exception):
    """A final, explained end: the runner raises it with the words the job should show."""

    def __init__(self, message: str, *, result: dict | None = None):
        super().__init__(message)
        self.result = result


def is_transient(exc: BaseException) -> bool:
    """Whether a later identical call may succeed: the sources' own `retryable` flag
    (CivitaiUnavailable, a retryable HuggingFaceError). Anything else is final."""
    from workers.sources.civitai_data import CivitaiUnavailable
    from workers.sources.huggingface import HuggingFaceError

    return isinstance(exc, CivitaiUnavailable) or (isinstance(exc, HuggingFaceError) and exc.retryable)


def retry_countdown(exc: BaseException) -> float:
    """Seconds before a task tries again after a transient error."""
    after = getattr(exc, "retry_after", None)
    return max(RETRY_MIN_SECONDS, min(RETRY_MAX_SECONDS, after or RETRY_DEFAULT_SECONDS))


def job_update(job_id: int, **fields) -> int:
    """Write to a job and bump its heartbeat (QuerySet.update does not touch auto_now fields)."""
    return Job.objects.filter(pk=job_id).update(**fields, updated_at=timezone.now())


def job_claim(*, job_id: int, message: str) -> Job | None:
    """Compare-and-set queued (or running with a dead worker) -> running. The job, or None when
    another delivery owns it or it is finished."""
    now = timezone.now()
    claimable = Q(status=Job.Status.QUEUED) | Q(
        status=Job.Status.RUNNING, updated_at__lt=now - timedelta(seconds=STALLED_AFTER_SECONDS))
    if not Job.objects.filter(claimable, pk=job_id).update(
            status=Job.Status.RUNNING, message=message, progress_done=0, progress_total=0, updated_at=now):
        return None
    return Job.objects.select_related("owner").get(pk=job_id)


def job_run(*, job_id: int, starting: str, work: Callable[[Job], tuple[str, dict | None]],
            explain_transient: Callable[[BaseException], str] = str) -> bool:
    """Claim the job, run `work(job)` (which returns the summary and the result), store how it ended.
    Returns whether this delivery ran it. Raises the transient error for the task to retry."""
    job = job_claim(job_id=job_id, message=starting)
    if job is None:
        return False

    def beat() -> None:
        Job.objects.filter(pk=job_id, status=Job.Status.RUNNING).update(updated_at=timezone.now())

    try:
        with beating(beat, name=f"job-heartbeat-{job_id}", every=HEARTBEAT_SECONDS):
            summary, result = work(job)
    except JobFailed as exc:
        job_update(job_id, status=Job.Status.ERROR, message=str(exc)[:2000], result=exc.result)
        return True
    except Exception as exc:
        if is_transient(exc):
            job_update(job_id, status=Job.Status.QUEUED, message=explain_transient(exc)[:2000])
            raise
        log.exception("job %s (%s) failed", job_id, job.kind)
        job_update(job_id, status=Job.Status.ERROR, message=f"internal error ({type(exc).__name__}): {exc}"[:2000])
        raise
    job_update(job_id, status=Job.Status.DONE, message=summary, result=result)
    return True
