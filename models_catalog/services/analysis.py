"""The analysis stage, after hashing: format by content, pickle safety, tensor fingerprint.

Nothing here executes a file (see workers/modelfiles/analyse.py). Whatever
happens, the row leaves the "analysing" state with a stored, explained
result and its local matches (identification from the catalog runs in
the same transaction; Civitai is asked afterwards by the batch runner).
"""
from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

from django.db import transaction
from django.utils import timezone

from models_catalog.models import FolderMember, LocalFile
from models_catalog.services.hashing import ProgressWriter
from models_catalog.services.matching import local_components_sync
from workers.modelfiles.analyse import Analysis, analyse_path
from workers.modelfiles.types import Finding

log = logging.getLogger(__name__)


def description_fields(description: dict | None) -> dict:
    """The LocalFile columns a self-description fills (the JSON, its label, its search words)."""
    from workers.modelfiles.self_description import SelfDescription

    parsed = SelfDescription.from_json(description)
    if parsed is None:
        return {"self_description": None, "described_as": "", "described_words": ""}
    return {"self_description": description, "described_as": parsed.label[:300],
            "described_words": parsed.search_words[:1000]}


def architecture_fields(architecture: dict | None) -> dict:
    """The LocalFile columns the architecture detector fills (the JSON, its family and kind)."""
    from workers.modelfiles.architecture import Architecture

    parsed = Architecture.from_json(architecture)
    if parsed is None:
        return {"architecture": None, "architecture_family": "", "architecture_kind": ""}
    return {"architecture": parsed.to_json(), "architecture_family": parsed.family, "architecture_kind": parsed.kind}


def local_file_describe(*, local_file_id: int) -> bool:
    """Describe a finished file again from its bytes (the `describe_files` backfill). Returns whether
    a description was stored. Compare-and-set on the status: a file re-analysed meanwhile is left alone."""
    from workers.modelfiles.analyse import describe_path
    from workers.modelfiles.types import ModelFileError

    lf = LocalFile.objects.filter(pk=local_file_id, status=LocalFile.Status.DONE).only("id", "path").first()
    if lf is None:
        return False
    try:
        description = describe_path(Path(lf.path))
    except (ModelFileError, OSError):
        return False
    return bool(LocalFile.objects.filter(pk=lf.pk, status=LocalFile.Status.DONE).update(
        **description_fields(description)))


def local_file_analyse(*, local_file_id: int) -> None:
    lf = LocalFile.objects.filter(pk=local_file_id).select_related("hashes").first()
    if lf is None or lf.status != LocalFile.Status.ANALYSING:
        return
    # A folder's members were stored by its hashing (which also gave it a folder digest); a file has none.
    folder = lf.is_folder or bool(getattr(getattr(lf, "hashes", None), "folder_digest", ""))
    members = list(FolderMember.objects.filter(folder=lf).values_list("relative_path", flat=True)) if folder else []
    # "reading tensors" shows its progress and rate as hashing does (progress fields only: the status
    # stays as it is, so a worker dying here leaves nothing stuck).
    LocalFile.objects.filter(pk=lf.pk, status=LocalFile.Status.ANALYSING).update(
        analysed_bytes=0, stage_started_at=timezone.now(), heartbeat_at=timezone.now())
    try:
        result = analyse_path(Path(lf.path), member_paths=members,
                              progress=ProgressWriter(lf.pk, field="analysed_bytes"))
    except Exception as exc:  # a reader bug must not leave the row "analysing" forever
        log.exception("analysis of local file %s failed", lf.pk)
        result = Analysis(format=lf.format or "unknown", verdict="unreadable",
                          findings=[asdict(Finding("unreadable", "analysis", "", f"internal error: {exc}"))],
                          error=f"internal error while reading the file ({type(exc).__name__}): {exc}")
    fingerprint = result.fingerprint or {}
    from models_catalog.services.pipeline import file_analysed

    with transaction.atomic():
        updated = LocalFile.objects.filter(pk=lf.pk, status=LocalFile.Status.ANALYSING).update(
            status=LocalFile.Status.DONE, heartbeat_at=timezone.now(),
            format=result.format, safety_verdict=result.verdict, safety_findings=result.findings,
            fingerprint=result.fingerprint, analysis_error=result.error,
            content_id=fingerprint.get("content_id") or "", precision_id=fingerprint.get("precision_id") or "",
            bf16_id=fingerprint.get("bf16_id") or "", fp8_id=fingerprint.get("fp8_id") or "",
            e5m2_id=fingerprint.get("e5m2_id") or "", folded_id=fingerprint.get("folded_id") or "",
            **description_fields(result.self_description), **architecture_fields(result.architecture),
        )
        if updated:  # only the writer that won the compare-and-set replaces the component rows
            local_components_sync(local_file_id=lf.pk, fingerprint=result.fingerprint)
            # Matching from the catalog (no network) in the same transaction: a file is never seen
            # "done" without its matches or its requested Civitai lookups.
            file_analysed(local_file_id=lf.pk)
