"""Import hashes other tools already computed (A1111 cache.json, Civitai Helper, Stability Matrix,
civitai-browser-plus), without reading the model files. Imported values stay marked as such until
the engine hashes the file (`register` re-queues imported rows to confirm them)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from django.db import transaction

from models_catalog.models import FileHashes, LocalFile
from models_catalog.services.pipeline import enqueue_identify
from models_catalog.services.paths import PathRefused, model_roots_for, resolve_under_roots
from workers import kinds
from workers.sources.local_sidecars import ImportedHashes, find_sidecar_hashes


@dataclass
class ImportOutcome:
    imported: list[LocalFile] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (model path, why)
    errors: list[tuple[str, str]] = field(default_factory=list)  # (sidecar path, why)


def hashes_import(*, root: str | Path, owner) -> ImportOutcome:
    outcome = ImportOutcome()
    roots = model_roots_for(owner)
    try:
        root_path = resolve_under_roots(root, roots=roots)
    except PathRefused as exc:
        outcome.errors.append((str(root), str(exc)))
        return outcome
    found, errors = find_sidecar_hashes(root_path)
    outcome.errors += [(str(p), why) for p, why in errors]
    for imp in found:
        why = _import_one(imp, owner=owner, roots=roots, outcome=outcome)
        if why:
            outcome.skipped.append((str(imp.model_path), why))
    return outcome


def _import_one(imp: ImportedHashes, *, owner, roots, outcome: ImportOutcome) -> str | None:
    if not imp.sha256:
        return f"{imp.tool} gives no SHA256 for it"
    try:
        path = resolve_under_roots(imp.model_path, roots=roots)
        st = path.stat()
    except PathRefused as exc:
        return str(exc)
    except OSError as exc:
        return f"cannot stat: {exc.strerror or exc}"
    if imp.size is not None and imp.size != st.st_size:
        return f"size disagrees ({imp.size:,} in {imp.tool}, {st.st_size:,} on disk): imported hashes discarded"
    with transaction.atomic():
        lf, created = LocalFile.objects.get_or_create(
            owner=owner, origin=LocalFile.Origin.REGISTERED, host="", path=str(path),
            defaults={"name": path.name[:255], "status": LocalFile.Status.DONE},
        )
        existing = FileHashes.objects.filter(local_file=lf).first()
        if existing is not None and existing.source == FileHashes.Source.ENGINE:
            return "already hashed here: the engine's hashes win"
        LocalFile.objects.filter(pk=lf.pk).update(
            status=LocalFile.Status.DONE, size=st.st_size, device=st.st_dev, inode=st.st_ino, mtime_ns=st.st_mtime_ns,
            bytes_total=st.st_size, bytes_done=st.st_size, error="",
        )
        FileHashes.objects.update_or_create(local_file=lf, defaults={
            "size": st.st_size, "source": FileHashes.Source.IMPORTED, "owner_id": lf.owner_id,
            **kinds.with_derived({
                **kinds.empty_fields(), "sha256": imp.sha256, "autov1": imp.autov1 or "",
                "autov3": (imp.autov3 or "")[:12], "autov3_full": imp.autov3 if imp.autov3 and len(imp.autov3) == 64 else "",
                "blake3": imp.blake3 or "", "crc32": imp.crc32 or "",
            }),
        })
        enqueue_identify(lf.pk)
    outcome.imported.append(lf)
    return None
