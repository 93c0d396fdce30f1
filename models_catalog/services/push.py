"""Hashes pushed from another machine: stored as LocalFile rows that are never opened here.

A record is one file (`hashes`) or one diffusers folder (`"kind": "folder"`,
`folder`): a folder is stored as a registered one is (see hashing._store_folder),
one row with its digest and its members, so it is identified and compared as a unit.
"""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field

from django.db import transaction

from models_catalog.models import FileHashes, FolderMember, LocalFile
from models_catalog.services.analysis import architecture_fields
from models_catalog.services.hashing import folder_hashes_store, hash_fields
from models_catalog.services.pipeline import enqueue_identify
from models_catalog.services.matching import local_components_sync
from models_catalog.services.paths import printable
from workers.hashing import WEIGHT_SUFFIXES, ComputedHashes, FolderHashes, HashesFormatError
from workers.push import defaults as push_defaults

MAX_BATCH = push_defaults.MAX_BATCH  # one limit for the client and the server
MAX_FOLDER_MEMBERS = 10_000
MAX_RELATIVE_PATH = 1024
MAX_SIZE = 2**63 - 1  # a BigIntegerField: larger sizes are lies, and would crash the insert
VERDICTS = {"safe", "suspicious", "dangerous", "unreadable"}
KINDS = {"file", "folder"}


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
    """Store a batch of pushed records. Each record: path, and either hashes (workers.hashing
    FileHashes JSON) or "kind": "folder" with folder (FolderHashes JSON); optionally format,
    fingerprint (workers.modelfiles JSON), safety {verdict, findings}.
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
    kind = record.get("kind", "file")
    if kind not in KINDS:
        raise PushRejected(f"kind must be one of {sorted(KINDS)}")
    if kind == "folder":
        folder = _folder_hashes(record.get("folder"))
        _store_folder(owner=owner, host=host, path=path, folder=folder, fields=_analysis_fields(record, default_format="diffusers"),
                      outcome=outcome)
    else:
        hashes = ComputedHashes.from_json(record.get("hashes"))
        if hashes.size > MAX_SIZE:
            raise PushRejected("hashes 'size' is too large")
        _store_file(owner=owner, host=host, path=path, hashes=hashes, fields=_analysis_fields(record, default_format=""),
                    outcome=outcome)


def _analysis_fields(record: dict, *, default_format: str) -> dict:
    fingerprint = record.get("fingerprint")
    if fingerprint is not None and not isinstance(fingerprint, dict):
        raise PushRejected("fingerprint must be an object or null")
    safety = record.get("safety") or {}
    verdict = safety.get("verdict", "") if isinstance(safety, dict) else ""
    if verdict and verdict not in VERDICTS:
        raise PushRejected(f"safety verdict must be one of {sorted(VERDICTS)}")
    findings = safety.get("findings", []) if isinstance(safety, dict) else []
    fmt = record.get("format") or default_format
    if not isinstance(fmt, str) or len(fmt) > 32:
        raise PushRejected("format must be a short string")
    return {
        "status": LocalFile.Status.DONE, "error": "", "format": fmt,
        "safety_verdict": verdict, "safety_findings": findings if isinstance(findings, list) else [],
        "fingerprint": fingerprint,
        "content_id": str((fingerprint or {}).get("content_id") or "")[:64],
        "precision_id": str((fingerprint or {}).get("precision_id") or "")[:64],
        "bf16_id": str((fingerprint or {}).get("bf16_id") or "")[:64],
        "fp8_id": str((fingerprint or {}).get("fp8_id") or "")[:64],
        # Family and kind as the pushing machine's detector saw them; rebuilt from the few fields
        # Architecture.from_json accepts (known family and kind), so a hostile record stores nothing odd.
        **architecture_fields(record.get("architecture")),
        "e5m2_id": str((fingerprint or {}).get("e5m2_id") or "")[:64],
        "folded_id": str((fingerprint or {}).get("folded_id") or "")[:64],
    }


def _name_of(path: str) -> str:
    return path.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1][:255] or "pushed"


def _store_file(*, owner, host: str, path: str, hashes: ComputedHashes, fields: dict, outcome: PushOutcome) -> None:
    def unchanged(lf: LocalFile, old: FileHashes) -> bool:
        return not lf.is_folder and old.sha256 == hashes.sha256

    def write(lf: LocalFile) -> None:
        FolderMember.objects.filter(folder=lf).delete()  # in case it was pushed as a folder before
        FileHashes.objects.update_or_create(local_file=lf, defaults={
            **hash_fields(hashes), "size": hashes.size, "folder_digest": "", "source": FileHashes.Source.PUSHED,
            "owner_id": lf.owner_id, "embedded_model_hash": hashes.embedded_model_hash or "", "embedded_legacy_hash": hashes.embedded_legacy_hash or "",
        })

    _upsert(owner=owner, host=host, path=path, fields={**fields, "is_folder": False}, size=hashes.size,
            unchanged=unchanged, write=write, outcome=outcome)


def _upsert(*, owner, host: str, path: str, fields: dict, size: int, unchanged, write, outcome: PushOutcome) -> None:
    """The part pushed files and folders share: find-or-create the row, skip it when the hashes and
    fingerprint are the same as stored, else update it, its components and hashes, and re-identify."""
    fields = {**fields, "name": _name_of(path), "size": size, "bytes_total": size, "bytes_done": size}
    with transaction.atomic():
        lf, created = LocalFile.objects.get_or_create(
            owner=owner, origin=LocalFile.Origin.PUSHED, host=host, path=path, defaults=fields,
        )
        old = FileHashes.objects.filter(local_file=lf).first()
        same_analysis = lf.content_id == fields["content_id"] and lf.architecture == fields["architecture"]
        if not created and old is not None and same_analysis and unchanged(lf, old):
            outcome.unchanged += 1
            outcome.ids.append(lf.pk)
            return
        if not created:
            for k, v in fields.items():
                setattr(lf, k, v)
            lf.save()
        local_components_sync(local_file_id=lf.pk, fingerprint=fields["fingerprint"])
        write(lf)
        enqueue_identify(lf.pk)
    outcome.ids.append(lf.pk)
    if created:
        outcome.created += 1
    else:
        outcome.updated += 1


def _folder_hashes(doc) -> FolderHashes:
    """FolderHashes.from_json re-checks the digest; the member paths are checked here, since
    they become rows and are shown (and would be joined to a path by anyone who trusts them)."""
    if isinstance(doc, dict) and isinstance(doc.get("members"), list) and len(doc["members"]) > MAX_FOLDER_MEMBERS:
        raise PushRejected(f"a folder may have at most {MAX_FOLDER_MEMBERS} members")
    folder = FolderHashes.from_json(doc)
    if not folder.members:
        raise PushRejected("a folder record needs at least one member")
    if folder.size > MAX_SIZE:
        raise PushRejected("the folder's total size is too large")
    seen: set[str] = set()
    for member in folder.members:
        problem = _relative_path_problem(member.relative_path)
        if problem:
            raise PushRejected(f"member {printable(member.relative_path)!r}: {problem}")
        if member.relative_path in seen:
            raise PushRejected(f"member {printable(member.relative_path)!r} is listed twice")
        seen.add(member.relative_path)
    return folder


def _relative_path_problem(relative: str) -> str | None:
    if not relative:
        return "the relative path is empty"
    if len(relative) > MAX_RELATIVE_PATH:
        return f"the relative path is longer than {MAX_RELATIVE_PATH} characters"
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in relative):
        return "the relative path contains control characters"
    if "\\" in relative:
        return "the relative path must use '/' separators, not backslashes"
    if relative.startswith("/") or (len(relative) > 1 and relative[1] == ":"):
        return "the relative path must not be absolute"
    if any(part in ("", ".", "..") for part in relative.split("/")):
        return "the relative path must not contain empty, '.' or '..' parts"
    if not relative.endswith(WEIGHT_SUFFIXES):
        return f"a member must be a weight file ({', '.join(WEIGHT_SUFFIXES)})"
    return None


def _member_rows(folder: FolderHashes) -> set[tuple]:
    return {(m.relative_path, m.hashes.size, *hash_fields(m.hashes).values()) for m in folder.members}


def _store_folder(*, owner, host: str, path: str, folder: FolderHashes, fields: dict, outcome: PushOutcome) -> None:
    hash_keys = list(hash_fields(folder.members[0].hashes))

    def unchanged(lf: LocalFile, old: FileHashes) -> bool:
        # The digest counts only InvokeAI's suffixes and no paths: the members themselves are compared too.
        return (lf.is_folder and old.folder_digest == folder.digest
                and set(FolderMember.objects.filter(folder=lf).values_list("relative_path", "size", *hash_keys))
                == _member_rows(folder))

    _upsert(owner=owner, host=host, path=path, fields={**fields, "is_folder": True}, size=folder.size,
            unchanged=unchanged, outcome=outcome,
            write=lambda lf: folder_hashes_store(local_file=lf, folder=folder, source=FileHashes.Source.PUSHED))
