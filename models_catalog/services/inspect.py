"""What the engine and the catalog know about one path: the `inspect` command's report."""
from __future__ import annotations

from pathlib import Path

from models_catalog.models import FileHashes, LocalFile
from models_catalog.services.hashing import hash_cache
from workers.hash_cache import hash_file_cached
from workers.hashing import HashingError, hash_folder


def inspect_path(*, path: Path) -> dict:
    resolved = path.expanduser().resolve(strict=True)
    report: dict = {"path": str(resolved)}
    try:
        if resolved.is_dir():
            report["hashes"] = hash_folder(resolved, cache=hash_cache()).to_json()
        else:
            hashes, cache_hit = hash_file_cached(resolved, cache=hash_cache())
            report["hashes"] = hashes.to_json()
            report["hash_cache_hit"] = cache_hit
    except HashingError as exc:
        report["error"] = str(exc)
    report["registered"] = [_stored(lf) for lf in LocalFile.objects.filter(path=str(resolved)).select_related("owner", "hashes")]
    return report


def _stored(lf: LocalFile) -> dict:
    row = {"id": lf.pk, "owner": lf.owner.username, "status": lf.status, "error": lf.error or None}
    stored = getattr(lf, "hashes", None) if FileHashes.objects.filter(local_file=lf).exists() else None
    if stored is not None:
        row["hashes"] = stored.civitai_form()
        row["folder_digest"] = stored.folder_digest or None
    return row
