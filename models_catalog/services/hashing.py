"""The hashing stage: one read of the file, every hash, stored with a compare-and-set.

Idempotent: a redelivered task for a file already hashed at the same
identity does nothing; a task whose file changed under it stores nothing and
the newer registration wins.
"""
from __future__ import annotations

import logging
import os
import stat
import time
from functools import lru_cache
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from models_catalog import library_revision
from models_catalog.models import FileHashes, FolderMember, LocalFile
from models_catalog.services.heartbeat import STALLED_AFTER_SECONDS, heartbeat
from models_catalog.services.paths import (
    PathRefused,
    describe_special,
    model_roots_for,
    resolve_under_roots,
)
from workers import kinds
from workers.hash_cache import HashCache, hash_file_cached_with_identity
from workers.hashing import ComputedHashes, HashingError, hash_folder

log = logging.getLogger(__name__)

PROGRESS_EVERY_SECONDS = 1.0


@lru_cache(maxsize=1)
def _cache_for(path: str) -> HashCache:
    return HashCache(path)


def hash_cache() -> HashCache:
    return _cache_for(str(settings.HASH_CACHE_PATH))


EMPTY_HASHES = kinds.empty_fields()


def hash_fields(hashes: ComputedHashes) -> dict:
    return {field: getattr(hashes, field) or "" for field in kinds.FIELDS}


class ProgressWriter:
    """Writes a stage's progress (`field`: bytes_done while hashing, analysed_bytes while reading
    tensors) and a heartbeat to the row at most once a second."""

    def __init__(self, local_file_id: int, *, field: str = "bytes_done"):
        self.local_file_id = local_file_id
        self.field = field
        # The stage's start already wrote a heartbeat: a file hashed within a second needs no progress write.
        self.last = time.monotonic()
        self.base = 0  # bytes of earlier folder members

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.last < PROGRESS_EVERY_SECONDS:
            return
        self.last = now
        LocalFile.objects.filter(pk=self.local_file_id).update(**{self.field: done}, heartbeat_at=timezone.now())


def _fail(local_file_id: int, message: str) -> None:
    LocalFile.objects.filter(pk=local_file_id).update(
        status=LocalFile.Status.ERROR, error=message, heartbeat_at=timezone.now()
    )


def local_file_hash(*, local_file_id: int) -> LocalFile | None:
    """Hash one LocalFile (file or diffusers folder) and store the result. Returns the row, or None if gone."""
    lf = LocalFile.objects.filter(pk=local_file_id).select_related("hashes", "owner").first()
    if lf is not None and _hash_row_of_owner(lf):
        # Not refresh_from_db: a file forgotten while it was read has no row left (its result was dropped).
        lf = LocalFile.objects.filter(pk=local_file_id).select_related("hashes", "owner").first()
    return lf


def _hash_row_of_owner(lf: LocalFile, *, roots: list[Path] | None = None) -> bool:
    """_hash_row, its writes to the file's row and hashes (the analysis' too) moving only its owner's
    library revision: the other users' cached duplicate groups stay (library_revision.owner_writes)."""
    with library_revision.owner_writes(lf.owner_id):
        return _hash_row(lf, roots=roots)


def _hash_row(lf: LocalFile, *, roots: list[Path] | None = None) -> bool:
    """The hashing stage for a loaded row. Returns whether it got as far as hashing (and storing, unless
    the row changed meanwhile); every early end stores its reason on the row, or has nothing to do."""
    if lf.origin == LocalFile.Origin.PUSHED:
        return False
    if _owned_by_a_live_worker(lf):
        return False  # a redelivered message while its first worker is still at it
    path = Path(lf.path)
    try:
        st = os.stat(path, follow_symlinks=False)  # the registered path was resolved: a link now is a swap
    except FileNotFoundError:
        _fail(lf.pk, "the file is gone: it was moved or deleted after it was registered")
        return False
    except OSError as exc:
        _fail(lf.pk, f"cannot read the file: {exc.strerror or exc}")
        return False
    refused = registered_path_problem(lf, path, st, roots=roots)
    if refused:
        _fail(lf.pk, refused)  # nothing about what the path now leads to is stored
        return False
    special = describe_special(st.st_mode)
    if special:
        _fail(lf.pk, special)
        return False
    is_dir = stat.S_ISDIR(st.st_mode)
    if not is_dir and st.st_size == 0:
        _fail(lf.pk, "the file is empty (0 bytes): there is nothing to identify")
        return False

    identity = {"device": st.st_dev, "inode": st.st_ino, "mtime_ns": st.st_mtime_ns}
    if not is_dir:
        identity["size"] = st.st_size
    if lf.status == LocalFile.Status.DONE and lf.has_engine_hashes and all(getattr(lf, k) == v for k, v in identity.items()):
        return False  # a redelivered task: the work is done

    LocalFile.objects.filter(pk=lf.pk).update(
        status=LocalFile.Status.HASHING, error="", bytes_done=0,
        bytes_total=0 if is_dir else st.st_size, heartbeat_at=timezone.now(), stage_started_at=timezone.now(),
    )
    progress = ProgressWriter(lf.pk)
    try:
        with heartbeat(lf.pk):
            _hash_and_store(lf, path, st, is_dir, identity, progress)
    except HashingError as exc:
        _fail(lf.pk, str(exc))
        return False
    except Exception as exc:
        # Never leave a row "hashing" forever because of a bug: say so, then let Celery log it.
        log.exception("hashing local file %s failed", lf.pk)
        _fail(lf.pk, f"internal error while hashing ({type(exc).__name__}): {exc}")
        raise
    return True


def _hash_and_store(lf: LocalFile, path: Path, st, is_dir: bool, identity: dict, progress) -> None:
    cached = None if is_dir else hf_cache_file(path, size=st.st_size)
    if cached is not None:
        _store_hf_cache_file(lf, cached, identity)
    elif is_dir:
        # Uploads are single files, so a folder here was registered: its members stay under
        # the roots its owner may register under (not another user's).
        folder = hash_folder(path, progress=progress, cache=hash_cache(), allowed_roots=model_roots_for(lf.owner))
        _store_folder(lf, folder, identity)
    else:
        # follow_symlinks=False: a link swapped in after the checks above is refused at open time too.
        hashes, hashed, _hit = hash_file_cached_with_identity(path, cache=hash_cache(), progress=progress,
                                                              follow_symlinks=False)
        # Store the identity the hashes belong to (a file replaced mid-read was read again).
        _store_file(lf, hashes, {"device": hashed.device, "inode": hashed.inode, "mtime_ns": hashed.mtime_ns,
                                 "size": hashed.size})


def _owned_by_a_live_worker(lf: LocalFile) -> bool:
    return (lf.status in (LocalFile.Status.HASHING, LocalFile.Status.ANALYSING) and lf.heartbeat_at is not None
            and (timezone.now() - lf.heartbeat_at).total_seconds() < STALLED_AFTER_SECONDS)


def registered_path_problem(lf: LocalFile, path: Path, st, *, roots: list[Path] | None = None) -> str:
    """Why a registered path may not be read (or changed) now, or ''. Checked when the job runs, not only
    at register: a hostile user may swap a symlink or another file in between. `st` is the path's lstat;
    `roots` defaults to the owner's (pass them when checking many files of one owner).
    Also asked by the duplicate actions (services/file_actions.py) before they touch a file."""
    if stat.S_ISLNK(st.st_mode):
        return "the path is now a symbolic link (it was a regular file when registered): register it again"
    if lf.origin != LocalFile.Origin.REGISTERED:
        return ""
    try:
        resolved = resolve_under_roots(path, roots=model_roots_for(lf.owner) if roots is None else roots)
    except PathRefused as exc:
        return f"no longer allowed: {exc}"
    if resolved != path:
        return "the path now leads elsewhere (a folder on it was replaced by a link): register it again"
    if lf.inode is not None and not stat.S_ISDIR(st.st_mode) and (st.st_dev, st.st_ino) != (lf.device, lf.inode):
        return ("another file was put in its place after it was registered (it is not the file that was "
                "registered): register it again")
    return ""


class ChunkFailed(Exception):
    """Some files of a chunk failed unexpectedly (each one's error is stored on its row)."""


def local_files_hash(*, local_file_ids: list[int]) -> None:
    """Hash a chunk of files one after the other. A file that fails does not stop its siblings; the
    chunk then ends in ChunkFailed so the task shows as failed, as a one-file task would."""
    # One read for the chunk's rows: each file's own compare-and-set still guards what it writes.
    rows = LocalFile.objects.select_related("hashes", "owner").in_bulk(local_file_ids)
    roots: dict[int, list[Path]] = {}  # each owner's model roots, asked once a chunk (a query or two each)
    failed = []
    for local_file_id in local_file_ids:
        if local_file_id not in rows:
            continue  # deleted since it was queued
        lf = rows[local_file_id]
        if lf.owner_id not in roots:
            roots[lf.owner_id] = model_roots_for(lf.owner)
        try:
            _hash_row_of_owner(lf, roots=roots[lf.owner_id])
        except Exception:
            # local_file_hash stored "internal error ..." on the row; the traceback goes to the log.
            log.exception("hashing local file %s (in a chunk of %s) failed", local_file_id, len(local_file_ids))
            failed.append(local_file_id)
    if failed:
        raise ChunkFailed(f"{len(failed)} of {len(local_file_ids)} files failed: ids {failed}")


def _finish(lf: LocalFile, *, size: int, identity: dict) -> bool:
    """Compare-and-set: mark the row hashed only if nobody re-registered it meanwhile."""
    updated = LocalFile.objects.filter(pk=lf.pk, status=LocalFile.Status.HASHING).update(
        **{**identity, "size": size}, status=LocalFile.Status.ANALYSING, bytes_done=size, bytes_total=size,
        hashed_at=timezone.now(), heartbeat_at=timezone.now(),
    )
    return bool(updated)


def _store_file(lf: LocalFile, hashes: ComputedHashes, identity: dict) -> None:
    with transaction.atomic():
        if not _finish(lf, size=hashes.size, identity=identity):
            log.info("local file %s changed state while hashing; result dropped", lf.pk)
            return
        file_hashes_upsert(local_file=lf, fields={
            **hash_fields(hashes),
            "size": hashes.size,
            "folder_digest": "",
            "embedded_model_hash": hashes.embedded_model_hash or "",
            "embedded_legacy_hash": hashes.embedded_legacy_hash or "",
            "source": FileHashes.Source.ENGINE,
        })
    _after_hashing(lf.pk)


def file_hashes_upsert(*, local_file: LocalFile, fields: dict) -> None:
    """Create or replace the file's FileHashes row in one statement (INSERT ... ON CONFLICT DO UPDATE):
    update_or_create takes six (two savepoints, a locking read), each a round trip inside the
    transaction that holds SQLite's write lock."""
    # bulk_create skips save(): the owner copy (the duplicate grouping's index) is set here.
    FileHashes.objects.bulk_create(
        [FileHashes(local_file=local_file, owner_id=local_file.owner_id, **fields)],
        update_conflicts=True, unique_fields=["local_file"], update_fields=[*fields, "owner", "computed_at"],
    )


def _store_folder(lf: LocalFile, folder, identity: dict) -> None:
    with transaction.atomic():
        if not _finish(lf, size=folder.size, identity=identity):
            return
        folder_hashes_store(local_file=lf, folder=folder, source=FileHashes.Source.ENGINE)
    _after_hashing(lf.pk)


def folder_hashes_store(*, local_file: LocalFile, folder, source: str) -> None:
    """A folder's digest (its six single-file hashes stay empty) and its member rows, replaced.
    Shared by the hashing stage and by pushed folders; call inside a transaction."""
    file_hashes_upsert(local_file=local_file, fields={
        **EMPTY_HASHES, "size": folder.size, "folder_digest": folder.digest, "source": source,
        "embedded_model_hash": "", "embedded_legacy_hash": "",
    })
    FolderMember.objects.filter(folder=local_file).delete()
    FolderMember.objects.bulk_create(
        FolderMember(folder=local_file, relative_path=m.relative_path, size=m.hashes.size, **hash_fields(m.hashes))
        for m in folder.members
    )


def hf_cache_file(path: Path, *, size: int):
    """The layout of a Hugging Face cache names an LFS blob by its SHA256: no need to read it."""
    from workers.sources.huggingface import is_hf_cache_path

    cached = is_hf_cache_path(path)
    if cached is None or not cached.sha256:
        return None
    # The layout gives no size: check it against what the Hub said, when an index is on record.
    from models_catalog.models import SourceFile

    known = set(SourceFile.objects.filter(sha256=cached.sha256, size__isnull=False).values_list("size", flat=True))
    if known and size not in known:
        log.warning("%s: blob size %s differs from the Hub's %s: hashing it", path, size, sorted(known))
        return None
    return cached


def _store_hf_cache_file(lf: LocalFile, cached, identity: dict) -> None:
    from models_catalog.services.catalog_store import hf_cached_file_store

    with transaction.atomic():
        if not _finish(lf, size=cached.size, identity=identity):
            return
        LocalFile.objects.filter(pk=lf.pk).update(name=cached.path.rsplit("/", 1)[-1][:255])
        file_hashes_upsert(local_file=lf, fields={
            **kinds.with_derived({**EMPTY_HASHES, "sha256": cached.sha256}),
            "size": cached.size, "folder_digest": "", "source": FileHashes.Source.HF_CACHE,
            "embedded_model_hash": "", "embedded_legacy_hash": "",
        })
        hf_cached_file_store(cached=cached)
    _after_hashing(lf.pk)


def _after_hashing(local_file_id: int) -> None:
    from models_catalog.services.pipeline import file_hashed

    file_hashed(local_file_id=local_file_id)
