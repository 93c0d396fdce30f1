"""Queue work only once the row that names it is committed (Zulip's rule)."""
from __future__ import annotations

from django.db import transaction

# A task costs a broker round trip, a worker hand-off and a database connection: more than hashing
# a LoRA of a few MB. Small files therefore travel together, as long as a chunk stays quick to
# redo (a redelivered chunk re-checks every file, and the ones already done cost a query).
CHUNK_MAX_FILES = 25
CHUNK_MAX_BYTES = 64 * 1024**2


def enqueue_hashing(local_file_id: int) -> None:
    from workers.tasks import hash_local_file

    transaction.on_commit(lambda: hash_local_file.delay(local_file_id))


def enqueue_hashing_many(*, local_files) -> None:
    """Queue several rows: small files in chunks (one task each), big files and folders alone."""
    from workers.tasks import hash_local_files

    for chunk in hashing_chunks(local_files=local_files):
        if len(chunk) == 1:
            enqueue_hashing(chunk[0])
        else:
            transaction.on_commit(lambda ids=chunk: hash_local_files.delay(ids))


def hashing_chunks(*, local_files, max_files: int | None = None, max_bytes: int | None = None) -> list[list[int]]:
    """Ids grouped in registration order: a file of max_bytes or more, or a folder (its size is
    unknown until hashed), is a chunk of its own; smaller files fill chunks up to both limits."""
    max_files = CHUNK_MAX_FILES if max_files is None else max_files
    max_bytes = CHUNK_MAX_BYTES if max_bytes is None else max_bytes
    chunks: list[list[int]] = []
    current: list[int] = []
    current_bytes = 0
    for lf in local_files:
        size = lf.bytes_total or lf.size or 0
        if lf.is_folder or size >= max_bytes:
            chunks.append([lf.pk])
            continue
        if current and (len(current) >= max_files or current_bytes + size > max_bytes):
            chunks.append(current)
            current, current_bytes = [], 0
        current.append(lf.pk)
        current_bytes += size
    if current:
        chunks.append(current)
    return chunks
