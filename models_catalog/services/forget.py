"""Forgetting a file: its row goes, and an upload's stored bytes with it when nothing else uses them.

A registered file lives where its owner keeps it: only the row is forgotten, the file is never
touched. An upload is a copy ModelXRef made (UPLOAD_DIR/<random>/<name>, services/upload.py):
once its row is gone nobody could reach those bytes again, so they are freed.
"""
from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.template.defaultfilters import filesizeformat

from models_catalog.models import LocalFile

log = logging.getLogger(__name__)

# What happened to a forgotten file's bytes: the codes the API answers, and their words.
DELETED = "deleted"
NOT_STORED = "not-stored"
IN_USE = "in-use"
ALREADY_GONE = "already-gone"
LEFT_ALONE = "left-alone"
FAILED = "failed"
STORED_COPY_WORDS = {
    DELETED: "its uploaded copy was deleted ({freed} freed)",
    NOT_STORED: "the file itself was not touched",
    IN_USE: "its uploaded copy was kept: another file uses it",
    ALREADY_GONE: "its uploaded copy was already gone",
    LEFT_ALONE: "its stored path is not an uploaded copy in the upload folder, so it was left alone",
    FAILED: "its uploaded copy could not be deleted ({error})",
}


@dataclass(frozen=True)
class Forgotten:
    local_file_id: int
    name: str
    stored_copy: str  # one of STORED_COPY_WORDS
    freed_bytes: int = 0
    error: str = ""

    @property
    def summary(self) -> str:
        what = STORED_COPY_WORDS[self.stored_copy].format(freed=filesizeformat(self.freed_bytes), error=self.error)
        return f"Forgot {self.name}: {what}."


def local_file_forget(*, local_file: LocalFile) -> Forgotten:
    """Delete the row (hashes, matches and components go with it), then free an upload's bytes.

    The row goes first: a failure to delete it loses no bytes, and a worker still hashing the file
    finds no row to write to (its compare-and-set matches nothing). Safe to repeat: a row already
    forgotten by a concurrent request still has its bytes checked, and bytes already gone are fine."""
    with transaction.atomic():
        # Locked so a hashing stage committing right now either finishes first (its hashes are then
        # deleted with the row) or waits and finds the row gone.
        locked = LocalFile.objects.select_for_update().filter(pk=local_file.pk).first()
        if locked is not None:
            locked.delete()
        row = local_file  # the caller's copy keeps the path even when the row was already gone
        if row.origin != LocalFile.Origin.UPLOADED:
            return Forgotten(row.pk, row.name, NOT_STORED)
        target = stored_upload_path(row.path)
        if target is None:
            return Forgotten(row.pk, row.name, LEFT_ALONE)
        if _used_by_another_row(row, target):
            return Forgotten(row.pk, row.name, IN_USE)
    code, freed, error = _free(target)
    return Forgotten(row.pk, row.name, code, freed_bytes=freed, error=error)


def stored_upload_path(path: str) -> Path | None:
    """The path as UPLOAD_DIR/<folder>/<name> with the folders resolved, or None when it is anything
    else: a row's path is data, and a tampered one must never lead a delete outside the uploads."""
    try:
        given = Path(path)
        if not given.is_absolute() or given.name in ("", ".", ".."):
            return None
        root = Path(settings.UPLOAD_DIR).resolve()
        folder = given.parent.resolve()  # symlinks and ".." resolved before judging where it is
    except (OSError, ValueError, RuntimeError):  # a NUL in the path, a symlink loop
        return None
    # Exactly one level below the upload root (the random folder of one upload): never the root itself.
    if folder.parent != root:
        return None
    return folder / given.name


def _used_by_another_row(row: LocalFile, target: Path) -> bool:
    # The same path registered in place (model roots that include the data dir) or by another user.
    # Pushed rows name files on another machine, whatever their path text says.
    paths = {row.path, str(target), str(target.parent)}
    return LocalFile.objects.filter(path__in=paths).exclude(pk=row.pk).exclude(origin=LocalFile.Origin.PUSHED).exists()


def _free(target: Path) -> tuple[str, int, str]:
    """Unlink the file and then its folder, relative to open folder descriptors: what is judged is
    what is deleted, even if a folder on the path were swapped for a link in between."""
    folder = target.parent
    try:
        root_fd = os.open(folder.parent, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        return ALREADY_GONE, 0, ""
    except OSError as exc:
        return _failed(target, exc)
    try:
        try:
            dir_fd = os.open(folder.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=root_fd)
        except FileNotFoundError:
            return ALREADY_GONE, 0, ""
        except OSError as exc:
            return _failed(target, exc)
        try:
            code, freed = _unlink_regular_file(target.name, dir_fd)
        except OSError as exc:
            return _failed(target, exc)
        finally:
            os.close(dir_fd)
        if code == LEFT_ALONE:
            return code, 0, ""
        try:
            os.rmdir(folder.name, dir_fd=root_fd)  # only an empty folder: anything else in it stays
        except OSError:
            pass
        return code, freed, ""
    finally:
        os.close(root_fd)


def _unlink_regular_file(name: str, dir_fd: int) -> tuple[str, int]:
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return ALREADY_GONE, 0
    if not stat.S_ISREG(st.st_mode):
        return LEFT_ALONE, 0  # a link or folder in an upload's place was not made by the upload
    os.unlink(name, dir_fd=dir_fd)
    # With another hard link to it, the bytes stay on disk: only the last name frees them.
    return DELETED, st.st_size if st.st_nlink == 1 else 0


def _failed(target: Path, exc: OSError) -> tuple[str, int, str]:
    log.warning("could not delete the uploaded copy %s: %s", target, exc)
    return FAILED, 0, exc.strerror or str(exc)
