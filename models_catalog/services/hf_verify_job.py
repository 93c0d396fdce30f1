"""Verify a local download folder against the Hub, as a job with progress (web and API)."""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

from django.conf import settings

from models_catalog.models import Job
from models_catalog.services.hashing import hash_cache
from models_catalog.services.jobs import JobFailed, job_run, job_update
from models_catalog.services.paths import PathRefused, model_roots_for, resolve_under_roots
from models_catalog.services.pipeline import enqueue_job
from workers.hash_cache import hash_file_cached
from workers.sources.hf_verify import VerifyError, exit_status, verify_local_dir
from workers.sources.huggingface import HuggingFaceError, index_repo


def hf_verify_job_create(*, owner, repo_id: str, local_dir: str, revision: str | None = None, repo_type: str = "model") -> Job:
    """Raises models_catalog.services.paths.PathRefused if local_dir is not under the owner's model roots."""
    folder = resolve_under_roots(local_dir, roots=model_roots_for(owner))
    job = Job.objects.create(owner=owner, kind=Job.Kind.HF_VERIFY, params={
        "repo_id": repo_id, "local_dir": str(folder), "revision": revision or None, "repo_type": repo_type})
    enqueue_job(job)
    return job


def hf_verify_job_run(*, job_id: int) -> None:
    job_run(job_id=job_id, starting="asking the Hub for the file list", work=_verify)


def _verify(job: Job) -> tuple[str, dict]:
    p = job.params
    try:
        # Re-checked: the folder, or the owner's roots, may have changed since.
        folder = resolve_under_roots(p["local_dir"], roots=model_roots_for(job.owner))
        index = index_repo(repo_id=p["repo_id"], revision=p.get("revision"), repo_type=p.get("repo_type", "model"),
                           endpoint=settings.HF_ENDPOINT or None, token=settings.HF_TOKEN or None)
    except PathRefused as exc:
        raise JobFailed(str(exc)) from exc
    except HuggingFaceError as exc:
        if exc.retryable:
            raise
        raise JobFailed(str(exc)) from exc
    state_path = settings.DATA_DIR / "verify" / f"job-{job.pk}.json"
    state_path.parent.mkdir(parents=True, exist_ok=True)
    last = [0.0]

    def progress(done: int, total: int, current) -> None:
        if time.monotonic() - last[0] >= 1.0:
            last[0] = time.monotonic()
            job_update(job.pk, progress_done=done, progress_total=total, message=f"hashing {current}")

    try:
        report = verify_local_dir(index=index, local_dir=Path(folder), state_path=state_path, progress=progress,
                                  sha256_of=lambda path: hash_file_cached(Path(path), cache=hash_cache())[0].sha256)
    except VerifyError as exc:
        raise JobFailed(str(exc)) from exc
    summary = (f"{len(report.matched)} matched, {len(report.mismatched)} mismatched, "
               f"{len(report.missing)} missing, {len(report.extra)} extra")
    job_update(job.pk, progress_done=report.hashed_bytes, progress_total=report.hashed_bytes)
    return summary, {"revision": index.revision, "exit_status": exit_status(report), **asdict(report)}
