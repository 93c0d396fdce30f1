"""Hashes pushed from another machine: stored as LocalFile rows that are never opened here."""
from __future__ import annotations

from dataclasses import dataclass, field

from django.db import transaction

from models_catalog.models import FileHashes, LocalFile
from models_catalog.services.hashing import hash_fields
from models_catalog.services.identify import enqueue_identify
from models_catalog.services.paths import printable
from workers.hashing import FileHashes as EngineHashes
from workers.hashing import HashesFormatError

MAX_BATCH = 500
VERDICTS = {"safe", "suspicious", "dangerous", "unreadable"}


class PushRejected(ValueError):
    pass


@dataclass
class PushOutcome:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    ids: list[int] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)  # {"index", "path", "error"}


def _clean_text(value, what: str, limit: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise PushRejected(f"{what} must be a non-empty string")
    if len(value) > limit:
        raise PushRejected(f"{what} is longer than {limit} characters")
    return printable(value)


def pushed_files_store(*, owner, host: str, files: list[dict]) -> PushOutcome:
    """Store a batch of pushed records. Each record: path, hashes (workers.hashing JSON), and
    optionally format, fingerprint (workers.modelfiles JSON), safety {verdict, findings}.
    A bad record is reported by index and does not stop the others."""
    host = _clean_text(host, "host", 255)
    if not isinstance(files, list) or len(files) > MAX_BATCH:
        raise PushRejected(f"files must be a list of at most {MAX_BATCH} records")
    outcome = PushOutcome()
    for index, record in enumerate(files):
        try:
            _store_one(owner=owner, host=host, record=record, outcome=outcome)
        except (PushRejected, HashesFormatError) as exc:
            path = record.get("path") if isinstance(record, dict) else None
            outcome.errors.append({"index": index, "path": printable(path) if isinstance(path, str) else None, "error": str(exc)})
    return outcome


def _store_one(*, owner, host: str, record, outcome: PushOutcome) -> None:
    if not isinstance(record, dict):
        raise PushRejected("each record must be a JSON object")
    path = _clean_text(record.get("path"), "path", 4096)
    hashes = EngineHashes.from_json(record.get("hashes"))
    fingerprint = record.get("fingerprint")
    if fingerprint is not None and not isinstance(fingerprint, dict):
        raise PushRejected("fingerprint must be an object or null")
    safety = record.get("safety") or {}
    verdict = safety.get("verdict", "") if isinstance(safety, dict) else ""
    if verdict and verdict not in VERDICTS:
        raise PushRejected(f"safety verdict must be one of {sorted(VERDICTS)}")
    findings = safety.get("findings", []) if isinstance(safety, dict) else []
    fmt = record.get("format") or ""
    if not isinstance(fmt, str) or len(fmt) > 32:
        raise PushRejected("format must be a short string")
    fields = {
        "name": path.replace("\\", "/").rsplit("/", 1)[-1][:255] or "pushed",
        "size": hashes.size, "bytes_total": hashes.size, "bytes_done": hashes.size,
        "status": LocalFile.Status.DONE, "error": "", "format": fmt,
        "safety_verdict": verdict, "safety_findings": findings if isinstance(findings, list) else [],
        "fingerprint": fingerprint,
        "content_id": str((fingerprint or {}).get("content_id") or "")[:64],
        "precision_id": str((fingerprint or {}).get("precision_id") or "")[:64],
    }
    with transaction.atomic():
        lf, created = LocalFile.objects.get_or_create(
            owner=owner, origin=LocalFile.Origin.PUSHED, host=host, path=path, defaults=fields,
        )
        old = FileHashes.objects.filter(local_file=lf).first()
        if not created and old is not None and old.sha256 == hashes.sha256 and lf.content_id == fields["content_id"]:
            outcome.unchanged += 1
            outcome.ids.append(lf.pk)
            return
        if not created:
            for k, v in fields.items():
                setattr(lf, k, v)
            lf.save()
        FileHashes.objects.update_or_create(local_file=lf, defaults={
            **hash_fields(hashes), "size": hashes.size, "source": FileHashes.Source.PUSHED,
            "embedded_model_hash": hashes.embedded_model_hash or "", "embedded_legacy_hash": hashes.embedded_legacy_hash or "",
        })
        enqueue_identify(lf.pk)
    outcome.ids.append(lf.pk)
    if created:
        outcome.created += 1
    else:
        outcome.updated += 1
