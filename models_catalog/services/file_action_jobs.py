"""The duplicate actions as Jobs: a row with the request, progress while it runs, the log when done.

The web and the API queue the job (it runs on a `hashing` worker, near the disks: a hard link
hashes both files again); the CLI runs it in its own process (`inline=True`), so it works without
a worker. A dry run is cheap (no file is read) and always runs at once. Re-running a job is
harmless: every file is checked again and what is done already is skipped ("already the same
file", "it is in quarantine", "no such entry").
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict


from models_catalog.models import Job
from models_catalog.services import file_actions
from models_catalog.services.jobs import job_run, job_update
from models_catalog.services.pipeline import enqueue_job

log = logging.getLogger(__name__)

PROGRESS_EVERY_SECONDS = 1.0

# kind -> (the service, the params it takes besides owner/dry_run/progress)
RUNNERS = {
    Job.Kind.HARDLINK: (file_actions.hardlink_copies, ("keeper_id", "copy_ids")),
    Job.Kind.QUARANTINE: (file_actions.quarantine_files, ("file_ids",)),
    Job.Kind.RESTORE: (file_actions.restore_files, ("entry_ids",)),
    Job.Kind.PURGE: (file_actions.purge_quarantine, ("entry_ids",)),
}


def file_action_job_create(*, owner, kind: str, params: dict, dry_run: bool, inline: bool = False) -> Job:
    """A Job for one action on `owner`'s files. Queued after commit, or run now when `inline` or a dry run.
    Raises QueueUnavailable (the job then says so) when the broker cannot take it."""
    if kind not in RUNNERS:
        raise ValueError(f"not a file action: {kind!r}")
    _, names = RUNNERS[kind]
    job = Job.objects.create(owner=owner, kind=kind, params={**{n: params.get(n) for n in names}, "dry_run": dry_run})
    if inline or dry_run:
        file_action_job_run(job_id=job.pk)
        job.refresh_from_db()
    else:
        enqueue_job(job)
    return job


class _JobProgress:
    """Progress, the current step and the log so far, written to the job at most once a second."""

    def __init__(self, job_id: int):
        self.job_id = job_id
        self.last = 0.0

    def __call__(self, done: int, total: int, message: str, items: list) -> None:
        now = time.monotonic()
        if now - self.last < PROGRESS_EVERY_SECONDS:
            return
        self.last = now
        job_update(self.job_id, progress_done=done, progress_total=total, message=message, result={"partial": True, "items": [asdict(i) for i in items]})


def file_action_job_run(*, job_id: int) -> None:
    job = Job.objects.filter(pk=job_id).select_related("owner").first()
    if job is None or job.is_finished or job.kind not in RUNNERS:
        return
    service, names = RUNNERS[job.kind]
    params = job.params or {}
    kwargs = {n: params.get(n) for n in names}
    optional = {"entry_ids"} if job.kind == Job.Kind.PURGE else set()  # purge: None is every quarantined file
    if any(v is None for n, v in kwargs.items() if n not in optional):
        Job.objects.filter(pk=job.pk, status=Job.Status.QUEUED).update(status=Job.Status.ERROR, message=f"missing parameters: {', '.join(names)}")
        return
    job_run(job_id=job.pk, starting="checking the files", work=_run_action)


def _run_action(job: Job) -> tuple[str, dict]:
    service, names = RUNNERS[job.kind]
    params = job.params or {}
    report = service(owner=job.owner, dry_run=bool(params.get("dry_run")), progress=_JobProgress(job.pk),
                     **{n: params.get(n) for n in names})
    job_update(job.pk, progress_done=len(report.items), progress_total=len(report.items))
    return report.summary(), report.to_json()
