"""What the engine and the catalog know about one path: the `inspect` command's report."""
from __future__ import annotations

import errno
import os
from pathlib import Path

from models_catalog.models import FileHashes, LocalFile, Match
from models_catalog.services.hashing import hash_cache
from workers.hash_cache import hash_file_cached
from workers.hashing import HashingError, hash_folder
from workers.modelfiles.analyse import analyse_path


def inspect_path(*, path: Path) -> dict:
    """Hashes (cached), format, safety and fingerprint computed now, plus what the catalog stored."""
    try:
        resolved = path.expanduser().resolve(strict=True)
    except RuntimeError:  # Python < 3.13 reports a symlink loop this way; callers expect an OSError
        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), str(path)) from None
    report: dict = {"path": str(resolved)}
    members: list[str] = []
    try:
        if resolved.is_dir():
            folder = hash_folder(resolved, cache=hash_cache())
            report["hashes"] = folder.to_json()
            members = [m.relative_path for m in folder.members]
        else:
            hashes, cache_hit = hash_file_cached(resolved, cache=hash_cache())
            report["hashes"] = hashes.to_json()
            report["hash_cache_hit"] = cache_hit
    except HashingError as exc:
        report["error"] = str(exc)
        return report
    analysis = analyse_path(resolved, member_paths=members)
    report["format"] = analysis.format
    report["safety"] = {"verdict": analysis.verdict, "findings": analysis.findings, "globals": analysis.globals_seen}
    report["fingerprint"] = analysis.fingerprint
    report["self_description"] = analysis.self_description
    report["architecture"] = analysis.architecture
    if analysis.error:
        report["analysis_error"] = analysis.error
    report["registered"] = [_stored(lf) for lf in LocalFile.objects.filter(path=str(resolved)).select_related("owner")]
    return report


def _stored(lf: LocalFile) -> dict:
    row = {"id": lf.pk, "owner": lf.owner.username, "status": lf.status, "error": lf.error or None,
           "format": lf.format or None, "safety_verdict": lf.safety_verdict or None,
           "content_id": lf.content_id or None, "precision_id": lf.precision_id or None,
           "bf16_id": lf.bf16_id or None, "fp8_id": lf.fp8_id or None, "e5m2_id": lf.e5m2_id or None,
           "folded_id": lf.folded_id or None}
    stored = FileHashes.objects.filter(local_file=lf).first()
    if stored is not None:
        row["hashes"] = stored.civitai_form()
        row["hashes_source"] = stored.source
        row["folder_digest"] = stored.folder_digest or None
    row["matches"] = [
        {"kind": m.kind, "evidence": m.evidence, "model": m.source_file.version.model.name, "file": m.source_file.name}
        for m in Match.objects.filter(local_file=lf).select_related("source_file__version__model")
    ]
    return row
