"""Convert a user's pickle checkpoint to safetensors: the command, the web page and the API.

workers/convert.py does the conversion (never running the pickle, verifying before the rename);
this adds what only the server knows: the owner's model roots (the source must lie under them,
and so must the output), the catalog's ids for the source (checked against the output), and
registering the output like any other file, so it is hashed, read and matched to its source
(converted / precision variant). The command runs it in the foreground; the page and the API
queue a job (`convert_job_create` -> workers.tasks.convert_checkpoint_job -> `convert_job_run`).
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from models_catalog.models import Job, LocalFile
from models_catalog.services.jobs import JobFailed, job_run, job_update
from models_catalog.services.paths import PathRefused, model_roots_for, printable, resolve_under_roots
from models_catalog.services.pipeline import enqueue_job
from models_catalog.services.register import local_file_register
from workers.convert import (
    CONVERTIBLE, DTYPE_CHOICES, ConvertError, ConvertPlan, ConvertResult, convert_checkpoint, output_sizes,
    plan_conversion,
)

ORIGINAL_CHOICES = ("keep", "quarantine")
PROGRESS_EVERY = 1.0  # seconds between a job's progress writes


@dataclass
class ConvertOutcome:
    result: ConvertResult
    output_file: LocalFile | None      # the registered output (queued for hashing)
    queue_error: str = ""              # the broker was down: the output is registered, hashed later
    quarantined: bool = False
    quarantine_error: str = ""         # the conversion stands; the original stayed where it was, and why


# --- where -----------------------------------------------------------------------------------

def convert_default_output(source: Path, dtype: str) -> Path:
    """`model.ckpt` -> `model.safetensors`; a cast says so: `model.fp16.safetensors`."""
    tag = "" if dtype == "keep" else f".{dtype}"
    return source.with_name(f"{source.stem}{tag}.safetensors")


def convert_output_resolve(*, owner, source: Path, out: str | None, dtype: str) -> Path:
    """The output path, which must lie under the owner's model roots (symlinks resolved), in an
    existing folder, and not exist yet. Raises PathRefused with the reason."""
    roots = model_roots_for(owner)
    raw = Path(out).expanduser() if out else convert_default_output(source, dtype)
    if "\x00" in str(raw):
        raise PathRefused("the output path contains a NUL byte")
    if not raw.is_absolute():
        raw = source.parent / raw
    if raw.name in ("", ".", ".."):
        raise PathRefused(f"{printable(raw)}: give a file name for the output")
    parent = resolve_under_roots(raw.parent, roots=roots)  # the folder must exist and lie under a root
    if not parent.is_dir():
        raise PathRefused(f"{printable(raw.parent)} is not a folder")
    target = parent / raw.name
    if target.exists() or target.is_symlink():
        raise PathRefused(f"{printable(target)} already exists: nothing is replaced; choose another name")
    if target == source:
        raise PathRefused("the output would replace the source")
    return target


def convert_source_resolve(*, owner, path: str) -> Path:
    source = resolve_under_roots(path, roots=model_roots_for(owner))
    if source.is_dir():
        raise PathRefused(f"{printable(path)} is a folder: convert its weight files one by one")
    return source


# --- the original, once the output is verified -----------------------------------------------

def quarantine_service() -> Callable:
    """The quarantine action --quarantine-original hands the source to (services/file_actions.py)."""
    from models_catalog.services.file_actions import local_file_quarantine

    return local_file_quarantine


def _quarantine_original(*, owner, source: Path, converted: LocalFile | None) -> None:
    service = quarantine_service()
    original = _registered_file(owner=owner, source=source)
    if original is None:
        original = (local_file_register(paths=[str(source)], owner=owner).files or [None])[0]
    reason = f"converted to safetensors: {converted.path if converted else 'see the job'}"
    service(local_file=original, owner=owner, reason=reason)


# --- the work ---------------------------------------------------------------------------------

def checkpoint_plan(*, owner, path: str, allow_suspicious: bool = True) -> tuple[ConvertPlan, dict[str, int]]:
    """What converting `path` would write (the page shows it first), and the size for each dtype.
    Raises PathRefused or ConvertError (with the verdict and findings for an unsafe file)."""
    source = convert_source_resolve(owner=owner, path=path)
    plan = plan_conversion(source, allow_suspicious=allow_suspicious)
    return plan, output_sizes(plan)


def checkpoint_convert(*, owner, path: str, out: str | None = None, dtype: str = "keep",
                       allow_suspicious: bool = False, original: str = "keep",
                       progress: Callable[[int, int, str], None] | None = None,
                       temp_name: str | None = None) -> ConvertOutcome:
    """Convert `path` (under the owner's roots) to `out` (default beside it, also under the roots),
    register the output and, with original="quarantine", hand the original to the quarantine.

    Raises PathRefused or ConvertError; on either nothing is written."""
    if dtype not in DTYPE_CHOICES:
        raise ConvertError(f"unknown dtype {dtype!r}: one of {', '.join(DTYPE_CHOICES)}")
    if original not in ORIGINAL_CHOICES:
        raise ConvertError(f"unknown original handling {original!r}: keep or quarantine")
    source = convert_source_resolve(owner=owner, path=path)
    target = convert_output_resolve(owner=owner, source=source, out=out, dtype=dtype)
    expected = _catalog_ids(owner=owner, source=source, dtype=dtype)
    result = convert_checkpoint(source, target, dtype=dtype, allow_suspicious=allow_suspicious, progress=progress,
                                temp_path=target.with_name(temp_name) if temp_name else None, **expected)
    registered = local_file_register(paths=[result.output], owner=owner)
    output_file = (registered.files or [None])[0]
    outcome = ConvertOutcome(result=result, output_file=output_file, queue_error=registered.queue_error)
    if original == "quarantine":
        from models_catalog.services.file_actions import QuarantineRefused

        try:
            _quarantine_original(owner=owner, source=source, converted=output_file)
            outcome.quarantined = True
        except QuarantineRefused as exc:  # the verified output stays; say why the original did not move
            outcome.quarantine_error = str(exc)
    return outcome


def _registered_file(*, owner, source: Path) -> LocalFile | None:
    return LocalFile.objects.filter(owner=owner, origin=LocalFile.Origin.REGISTERED, host="", path=str(source)).first()


def _catalog_ids(*, owner, source: Path, dtype: str) -> dict[str, str]:
    """The source's ids as the catalog computed them (another reading of the file), when the row
    describes the file as it is now; the converter then checks the output against them."""
    lf = _registered_file(owner=owner, source=source)
    if lf is None or lf.status != LocalFile.Status.DONE or not lf.content_id:
        return {}
    try:
        st = os.stat(source)
    except OSError:
        return {}
    if (lf.device, lf.inode, lf.size, lf.mtime_ns) != (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns):
        return {}  # changed since it was analysed: its ids say nothing about the bytes read now
    if dtype == "keep":
        return {"expect_content_id": lf.content_id}
    if dtype == "fp16" and lf.precision_id:
        return {"expect_precision_id": lf.precision_id}
    return {}


# --- as a job (web page, API) -----------------------------------------------------------------

def convert_offered(lf: LocalFile, user) -> bool:
    """Whether a file's page offers "Convert to safetensors": the owner's own registered pickle or
    numpy file whose verdict allows it (the conversion itself checks everything again)."""
    return (lf.owner_id == user.pk and lf.origin == LocalFile.Origin.REGISTERED and not lf.is_folder
            and lf.format in CONVERTIBLE and lf.safety_verdict in ("safe", "suspicious"))


def convert_job_create(*, owner, local_file: LocalFile, out: str | None = None, dtype: str = "keep",
                       allow_suspicious: bool = False, original: str = "keep") -> Job:
    """Check what can be checked now (whose file, where the output goes, the verdict on record,
    then queue the conversion. Raises PathRefused or ConvertError."""
    if local_file.owner_id != owner.pk:
        raise ConvertError("only the file's owner can convert it")
    if local_file.origin == LocalFile.Origin.PUSHED:
        raise ConvertError("a pushed file lives on another machine: convert it there (python -m workers.convert)")
    if local_file.is_folder:
        raise ConvertError("a folder cannot be converted: convert its weight files one by one")
    if dtype not in DTYPE_CHOICES:
        raise ConvertError(f"unknown dtype {dtype!r}: one of {', '.join(DTYPE_CHOICES)}")
    if original not in ORIGINAL_CHOICES:
        raise ConvertError(f"unknown original handling {original!r}: keep or quarantine")
    _refuse_by_record(local_file, allow_suspicious=allow_suspicious)
    source = convert_source_resolve(owner=owner, path=local_file.path)
    target = convert_output_resolve(owner=owner, source=source, out=out, dtype=dtype)
    job = Job.objects.create(owner=owner, kind=Job.Kind.CONVERT, message="queued", params={
        "local_file_id": local_file.pk, "source": str(source), "out": str(target), "dtype": dtype,
        "allow_suspicious": allow_suspicious, "original": original})
    enqueue_job(job)
    return job


def _refuse_by_record(lf: LocalFile, *, allow_suspicious: bool) -> None:
    """What the catalog already knows refuses at once; the job scans the file again anyway."""
    verdict = lf.safety_verdict
    if verdict in ("dangerous", "unreadable") or (verdict == "suspicious" and not allow_suspicious):
        found = [f for f in (lf.safety_findings or []) if isinstance(f, dict) and f.get("severity") == verdict][:3]
        words = "; ".join(f"{f.get('what')} at {f.get('where')}" for f in found)
        hint = " (allow suspicious files to convert it anyway)" if verdict == "suspicious" else ""
        raise ConvertError(f"{lf.name} is {verdict}{': ' + words if words else ''}: it is not converted{hint}",
                           verdict=verdict)
    if lf.format and lf.format not in CONVERTIBLE:
        raise ConvertError(f"{lf.name} is a {lf.format} file: the converter reads torch checkpoints, bare pickles "
                           "and numpy .npz/.npy files")


def convert_job_run(*, job_id: int) -> None:
    """The job's work; a message redelivered after its worker died re-runs it from the start (the
    temporary file of a killed run has the job's name and is replaced), a running or finished job
    is left alone (services/jobs.py)."""
    if Job.objects.filter(pk=job_id, kind=Job.Kind.CONVERT).exists():
        job_run(job_id=job_id, starting="scanning the checkpoint", work=_convert)


def _convert(job: Job) -> tuple[str, dict]:
    p = job.params
    last = [0.0]

    def progress(done: int, total: int, stage: str) -> None:
        now = time.monotonic()
        if now - last[0] >= PROGRESS_EVERY or done >= total:
            last[0] = now
            job_update(job.pk, progress_done=done, progress_total=total, message=stage)

    try:
        # Paths re-checked at use time: the file, or the owner's roots, may have changed since.
        outcome = checkpoint_convert(owner=job.owner, path=p["source"], out=p["out"], dtype=p["dtype"],
                                     allow_suspicious=p.get("allow_suspicious", False),
                                     original=p.get("original", "keep"), progress=progress,
                                     temp_name=f".{Path(p['out']).name}.job{job.pk}.partial")
    except (ConvertError, PathRefused) as exc:
        result = None
        if isinstance(exc, ConvertError) and exc.verdict:
            result = {"verdict": exc.verdict, "findings": [
                {"severity": f.severity, "what": f.what, "where": f.where, "why": f.why} for f in exc.findings[:50]]}
        raise JobFailed(str(exc), result=result) from exc
    res = outcome.result
    summary = f"wrote {res.output} ({res.plan.output_size:,} bytes, {len(res.plan.tensors)} tensors), verified"
    if outcome.queue_error:
        summary += "; it is registered and waits for the queue to be hashed"
    if outcome.quarantined:
        summary += "; the original is in quarantine"
    elif outcome.quarantine_error:
        summary += f"; {outcome.quarantine_error}"
    total = res.plan.source_tensor_bytes + res.plan.output_size
    job_update(job.pk, progress_done=total, progress_total=total)
    return summary, {**res.to_json(), "output_file_id": outcome.output_file.pk if outcome.output_file else None,
                     "quarantined": outcome.quarantined, "quarantine_error": outcome.quarantine_error}
