"""Uploads: the browser streams the file to a temp file on disk; we move it into the data dir,
unless its owner already has a file with the same bytes."""
from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from dataclasses import dataclass

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction

from models_catalog.models import LocalFile
from models_catalog.services.pipeline import QueueUnavailable, enqueue_hashing
from models_catalog.services.paths import clean_upload_name


class UploadRefused(Exception):
    pass


class UploadWaitsForQueue(QueueUnavailable):
    """The upload is stored and its row committed, but the broker is down: the row waits for the queue
    and the reaper sends it once the broker is back. Sending the file again would only store it twice."""

    def __init__(self, message: str, *, local_file: LocalFile):
        super().__init__(message)
        self.local_file = local_file


@dataclass(frozen=True)
class Uploaded:
    local_file: LocalFile
    # True: the owner already had these bytes, nothing was stored, and local_file is that file.
    already_had: bool = False


def local_file_upload(*, uploaded: UploadedFile, owner) -> Uploaded:
    """Store an uploaded file under UPLOAD_DIR/<random>/<clean name> and queue it for hashing, or,
    when the owner already has a finished file with the same SHA256, store nothing and answer that file."""
    if uploaded.size is not None and uploaded.size > settings.MAX_UPLOAD_BYTES:
        raise UploadRefused(f"the file is {uploaded.size:,} bytes; the limit is {settings.MAX_UPLOAD_BYTES:,} bytes")
    if not uploaded.size:
        raise UploadRefused("the file is empty (0 bytes)")
    existing = owners_file_with_sha256(owner=owner, sha256=_sha256_of(uploaded))
    if existing is not None:
        uploaded.close()  # a temp file goes now, not at the end of the request
        return Uploaded(existing, already_had=True)
    return Uploaded(_store(uploaded=uploaded, owner=owner))


def owners_file_with_sha256(*, owner, sha256: str) -> LocalFile | None:
    """The owner's own finished file with these bytes (any origin), oldest first. Only the owner's:
    not local_files_visible_to, which for staff spans everyone, since the answer would tell whether another
    user has the same file. A file still being hashed has no trustworthy SHA256 yet and does not count."""
    return (LocalFile.objects.filter(owner=owner, status=LocalFile.Status.DONE, hashes__sha256=sha256)
            .order_by("pk").first())


def _sha256_of(uploaded: UploadedFile) -> str:
    streamed = getattr(uploaded, "streamed_sha256", None)  # upload_handlers: hashed while it streamed
    if streamed:
        return streamed
    # Any other handler (small files kept in memory, a caller's own file object): read the bytes once.
    digest = hashlib.sha256()
    for chunk in uploaded.chunks():
        digest.update(chunk)
    return digest.hexdigest()


def _store(*, uploaded: UploadedFile, owner) -> LocalFile:
    name = clean_upload_name(uploaded.name or "")
    # A random folder per upload: names never collide and never name a path.
    folder = settings.UPLOAD_DIR / uuid.uuid4().hex
    folder.mkdir(mode=0o700, parents=True)
    target = folder / name
    temp_path = getattr(uploaded, "temporary_file_path", None)
    if temp_path:
        shutil.move(temp_path(), target)  # a rename when on the same filesystem
    else:
        with open(target, "xb") as out:
            for chunk in uploaded.chunks():
                out.write(chunk)
    os.chmod(target, 0o600)  # only the account that runs ModelXRef reads uploads
    st = target.stat()
    try:
        with transaction.atomic():
            lf = LocalFile.objects.create(
                owner=owner, origin=LocalFile.Origin.UPLOADED, path=str(target), name=name,
                size=st.st_size, device=st.st_dev, inode=st.st_ino, mtime_ns=st.st_mtime_ns, bytes_total=st.st_size,
            )
            enqueue_hashing(lf.pk)
    except QueueUnavailable as exc:  # raised by the send after the commit: the row is there
        raise UploadWaitsForQueue(str(exc), local_file=lf) from exc
    return lf
