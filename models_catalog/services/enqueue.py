"""Hashing messages on their way to the broker: which files travel together, the send and its record.
When they are sent is services/pipeline.py's business."""
from __future__ import annotations

from django.utils import timezone

# A task costs a broker round trip, a worker hand-off and a database connection: more than hashing
# a LoRA of a few MB. Small files therefore travel together, as long as a chunk stays quick to
# redo (a redelivered chunk re-checks every file, and the ones already done cost a query).
CHUNK_MAX_FILES = 25
CHUNK_MAX_BYTES = 64 * 1024**2


class QueueUnavailable(Exception):
    """The broker could not take a message. The rows stay queued ("waiting for the queue") and the
    reaper sends them once the broker is back: nothing is lost, the caller only says so."""


def hashing_send(local_file_ids: list[int]) -> None:
    """Hand one hashing message for these rows to the broker now, and record that it went.
    Raises QueueUnavailable (after marking the rows) when the broker is unreachable."""
    hashing_send_chunks([local_file_ids])


def hashing_send_chunks(chunks: list[list[int]]) -> None:
    """One message per chunk, each recorded as it goes. When the broker is unreachable, this chunk and
    every later one are marked "waiting for the queue" and QueueUnavailable counts all of them."""
    from models_catalog.models import LocalFile
    from workers.tasks import hash_local_file, hash_local_files

    for index, local_file_ids in enumerate(chunks):
        try:
            if len(local_file_ids) == 1:
                hash_local_file.delay(local_file_ids[0])
            else:
                hash_local_files.delay(local_file_ids)
        except Exception as exc:  # kombu wraps every transport failure differently; all mean "not sent"
            # Not logged here: each caller reports it once, where it is read (the API and pages in the
            # server's log, the CLI as its error, the reaper in the worker's log).
            waiting = [pk for chunk in chunks[index:] for pk in chunk]
            LocalFile.objects.filter(pk__in=waiting, status=LocalFile.Status.QUEUED).update(
                enqueued_at=None, error=f"waiting for the queue (the broker is unreachable: {exc}); "
                                        "it is sent as soon as the broker is back")
            raise QueueUnavailable(f"the task queue is unreachable ({exc}); {len(waiting)} file(s) "
                                   "stay queued and are sent when it is back") from exc
        LocalFile.objects.filter(pk__in=local_file_ids).update(enqueued_at=timezone.now())


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
