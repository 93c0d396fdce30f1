"""Hugging Face: index repos into the catalog, and identify files of a local HF cache for free."""
from __future__ import annotations

from django.conf import settings

from models_catalog.models import FileHashes, Job, SourceVersion
from models_catalog.services.catalog_store import hf_repo_store
from models_catalog.services.pipeline import enqueue_job
from models_catalog.services.jobs import JobFailed, job_run, job_update
from models_catalog.services.matching import local_files_rematch
from workers.sources.huggingface import HuggingFaceError, index_repo


def hf_repo_index(*, repo_id: str, revision: str | None = None, repo_type: str = "model") -> SourceVersion:
    """Fetch a repo's file list (LFS sha256 / git sha1 per file) and store it; rematch local files."""
    index = index_repo(
        repo_id=repo_id, revision=revision, repo_type=repo_type,
        endpoint=settings.HF_ENDPOINT or None, token=settings.HF_TOKEN or None,
    )
    version = hf_repo_store(index=index)
    sha256s = [f.sha256 for f in index.files if f.sha256]
    ids = set(FileHashes.objects.filter(sha256__in=sha256s).values_list("local_file_id", flat=True))
    if ids:
        local_files_rematch(local_file_ids=ids)
    return version


def hf_index_job_create(*, owner, repo_id: str, revision: str | None, repo_type: str) -> Job:
    job = Job.objects.create(owner=owner, kind=Job.Kind.HF_INDEX,
                             params={"repo_id": repo_id, "revision": revision or None, "repo_type": repo_type})
    enqueue_job(job)
    return job


def hf_index_job_run(*, job_id: int) -> None:
    job_run(job_id=job_id, starting="asking the Hub", work=_index, explain_transient=_explain)


def _index(job: Job) -> tuple[str, dict]:
    try:
        version = hf_repo_index(**job.params)
    except HuggingFaceError as exc:
        if exc.retryable:
            raise
        raise JobFailed(_explain(exc)) from exc
    files = version.files.count()
    job_update(job.pk, progress_done=files, progress_total=files)
    return (f"indexed {files} files at {version.external_id[:12]}",
            {"source_version_id": version.pk, "model_id": version.model_id, "files": files})


def _explain(exc: HuggingFaceError) -> str:
    return {
        "repo_not_found": "the repository does not exist (or is private and no HF_TOKEN gives access)",
        "revision_not_found": "the repository has no such revision",
        "gated": "the repository is gated: accept its terms on the Hub and set HF_TOKEN",
        "rate_limited": "the Hub is rate-limiting us; will retry",
        "unavailable": "the Hub did not answer; will retry",
    }.get(exc.kind, "") + f" ({exc})"
