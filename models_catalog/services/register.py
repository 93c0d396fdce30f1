"""Register files and folders in place: the CLI's and the web's way into the pipeline.

A folder can hold 100,000 files: it is walked lazily and registered in chunks (one query for the
rows already known, one bulk write, one enqueue after commit, each chunk its own transaction), and
the outcome keeps counts and a bounded sample, never a list of every path.
"""
from __future__ import annotations

import os
import stat
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from itertools import islice
from pathlib import Path

from django.db import IntegrityError, transaction
from django.utils import timezone

from models_catalog import library_revision
from models_catalog.models import LocalFile
from models_catalog.services.pipeline import QueueUnavailable, enqueue_hashing_many
from models_catalog.services.file_actions import in_quarantine, quarantine_places
from models_catalog.services.heartbeat import STALLED_AFTER_SECONDS
from models_catalog.services.paths import PathRefused, describe_special, model_roots_for, printable, resolve_under_roots
from workers.discovery import iter_model_units

QUARANTINED = "it is in ModelXRef's quarantine folder: restore it from the Quarantine page instead"
# A row whose heartbeat is this old lost its worker (see services/heartbeat.py).
STALLED_AFTER = timedelta(seconds=STALLED_AFTER_SECONDS)
# Paths per transaction: big enough that the per-chunk queries are cheap per file, small enough
# that memory and a transaction's locks stay bounded and workers start on the first chunk early.
CHUNK_SIZE = 1000
# Rows (and refusals) kept per kind for display; the counts cover them all.
SAMPLE_SIZE = 1000
KINDS = ("queued", "unchanged", "failed", "refused")
# What registering (re)sets on a row that already existed (bulk_update does not touch auto_now).
UPDATED_FIELDS = ["device", "inode", "mtime_ns", "size", "status", "error", "bytes_done", "bytes_total",
                  "stage_attempts", "enqueued_at", "updated_at"]


@dataclass
class RegisterOutcome:
    # The first SAMPLE_SIZE of each kind, in registration order; `counts` has the totals.
    queued: list[LocalFile] = field(default_factory=list)
    unchanged: list[LocalFile] = field(default_factory=list)
    failed: list[LocalFile] = field(default_factory=list)  # stored with an error (e.g. a FIFO)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (path as given, why)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    queue_error: str = ""  # the broker was down: the queued rows wait, and are sent when it is back
    # Every registered row's id, only when asked (`register --wait` follows them): 8 bytes a file.
    file_ids: array | None = None

    def add(self, kind: str, item) -> None:
        self.counts[kind] += 1
        kept = getattr(self, kind)
        if len(kept) < SAMPLE_SIZE:
            kept.append(item)
        if self.file_ids is not None and kind != "refused":
            self.file_ids.append(item.pk)

    @property
    def files(self) -> list[LocalFile]:
        """The sample of registered rows (all of them for a registration under SAMPLE_SIZE)."""
        return self.queued + self.unchanged + self.failed

    @property
    def registered(self) -> int:
        return self.counts["queued"] + self.counts["unchanged"] + self.counts["failed"]


def local_file_register(*, paths: Iterable[str], owner, roots: list[Path] | None = None,
                        keep_ids: bool = False) -> RegisterOutcome:
    """Create or refresh LocalFile rows for `paths` and queue the changed ones for hashing.

    Unchanged files (same device, inode, size and mtime as when last hashed)
    cost a stat: no read, no task. Paths must lie under `roots`, by default the
    owner's (`model_roots_for`). With `keep_ids`, the outcome lists every row's id.
    """
    outcome = RegisterOutcome(file_ids=array("q") if keep_ids else None)
    roots = model_roots_for(owner) if roots is None else roots
    units = _units(paths, roots=roots, outcome=outcome)
    waiting_after = 0  # rows of the chunks after the one that found the broker down
    while chunk := list(islice(units, CHUNK_SIZE)):
        had_error = bool(outcome.queue_error)
        # A chunk writes only this owner's rows: the other users' cached duplicate groups stay.
        with library_revision.owner_writes(owner.pk):
            queued = _register_chunk(_dedupe(chunk), owner=owner, outcome=outcome)
        waiting_after += queued if had_error else 0
    if waiting_after:
        outcome.queue_error += f"; {waiting_after} more file(s) registered after it wait the same way"
    return outcome


def _dedupe(chunk: list[tuple[Path, os.stat_result, str]]) -> dict[Path, tuple[os.stat_result, str]]:
    # A path met twice in one chunk (a folder and a file in it) is one row. Across chunks the second
    # meeting finds the row on its way and counts it unchanged: no set of every path is kept.
    units: dict[Path, tuple[os.stat_result, str]] = {}
    for path, st, special in chunk:
        units.setdefault(path, (st, special))
    return units


def _units(paths: Iterable[str], *, roots: list[Path], outcome: RegisterOutcome) -> Iterator[tuple[Path, os.stat_result, str]]:
    """(path, stat, special-file error) of each unit to register, lazily; refusals go to `outcome`."""
    quarantines = quarantine_places()
    for raw in paths:
        try:
            resolved = resolve_under_roots(raw, roots=roots)
            st = resolved.stat()
        except PathRefused as exc:
            outcome.add("refused", (printable(raw), str(exc)))
            continue
        except OSError as exc:
            outcome.add("refused", (printable(raw), f"cannot stat: {exc.strerror or exc}"))
            continue
        if in_quarantine(resolved, places=quarantines):
            outcome.add("refused", (printable(raw), QUARANTINED))
            continue
        if stat.S_ISDIR(st.st_mode):
            units_found = iter_model_units(
                resolved,
                resolve=lambda p: resolve_under_roots(p, roots=roots),
                on_skip=lambda p, why: outcome.add("refused", (printable(p), why)),
            )
            for unit, unit_st in units_found:
                if in_quarantine(unit, places=quarantines):  # a quarantine folder inside a root is not walked into the catalog
                    continue
                yield unit, unit_st, ""
        else:
            yield resolved, st, describe_special(st.st_mode) or ""


def _register_chunk(units: dict[Path, tuple[os.stat_result, str]], *, owner, outcome: RegisterOutcome) -> int:
    """One transaction: one query for the known rows, a bulk insert and a bulk update, one enqueue.
    Returns how many rows it queued."""
    existing = {
        lf.path: lf
        for lf in LocalFile.objects.filter(
            owner=owner, origin=LocalFile.Origin.REGISTERED, host="", path__in=[str(p) for p in units]
        ).select_related("hashes")
    }
    rows: list[tuple[LocalFile, str]] = []  # (row to write, its kind), in registration order
    for path, (st, special) in units.items():
        lf, kind = _prepared(path=path, st=st, special=special, owner=owner, existing=existing.get(str(path)),
                             queue_error=outcome.queue_error)
        if kind == "unchanged":
            outcome.add(kind, lf)
        else:
            rows.append((lf, kind))
    try:
        with transaction.atomic():
            written = _write(rows, owner=owner)
            queued = [lf for lf, kind in written if kind == "queued"]
            if not outcome.queue_error:  # the broker is down: later chunks wait with their rows marked
                enqueue_hashing_many(local_files=queued)
    except QueueUnavailable as exc:
        # The rows are committed and marked "waiting for the queue": the reaper sends them later.
        outcome.queue_error = str(exc)
    for lf, kind in written:
        outcome.add(kind, lf)
    return len(queued)


def _write(rows: list[tuple[LocalFile, str]], *, owner) -> list[tuple[LocalFile, str]]:
    new = [lf for lf, _ in rows if lf.pk is None]
    now = timezone.now()
    changed = [lf for lf, _ in rows if lf.pk is not None]
    for lf in changed:
        lf.updated_at = now
    if changed:
        LocalFile.objects.bulk_update(changed, UPDATED_FIELDS)
    if not new:
        return rows
    try:
        with transaction.atomic():  # a savepoint: another register of the same paths may have won the race
            LocalFile.objects.bulk_create(new)
        return rows
    except IntegrityError:
        for lf in new:
            lf.pk = None
            lf._state.adding = True
    # One row at a time, only after a lost race: the rows the other register created are its to queue.
    written = []
    for lf, kind in rows:
        if lf.pk is not None:
            written.append((lf, kind))
            continue
        try:
            with transaction.atomic():
                lf.save()
            written.append((lf, kind))
        except IntegrityError:
            written.append((LocalFile.objects.get(owner=owner, origin=lf.origin, host="", path=lf.path), "unchanged"))
    return written


def _identity(st: os.stat_result) -> dict:
    is_dir = stat.S_ISDIR(st.st_mode)
    # A folder's own size/mtime says little about its weights; the hashing
    # stage fills size with the sum of its members.
    return {"device": st.st_dev, "inode": st.st_ino, "mtime_ns": st.st_mtime_ns, **({} if is_dir else {"size": st.st_size})}


def _prepared(*, path: Path, st: os.stat_result, special: str, owner, existing: LocalFile | None,
              queue_error: str) -> tuple[LocalFile, str]:
    """The row as registering leaves it (not saved yet), and whether it is queued, unchanged or failed."""
    identity = _identity(st)
    is_dir = stat.S_ISDIR(st.st_mode)
    if existing is not None:
        same = all(getattr(existing, k) == v for k, v in identity.items())
        # Folders are always re-queued: a member can change without touching the
        # folder's own mtime, and the hash cache keeps the rehash cheap.
        if same and existing.status == LocalFile.Status.DONE and existing.has_engine_hashes and not is_dir:
            return existing, "unchanged"
        if same and _on_its_way(existing):
            return existing, "unchanged"
        lf = existing
        for k, v in identity.items():
            setattr(lf, k, v)
    else:
        lf = LocalFile(owner=owner, origin=LocalFile.Origin.REGISTERED, path=str(path), name=path.name[:255],
                       is_folder=is_dir, **identity)
    if special:
        lf.status, lf.error = LocalFile.Status.ERROR, special
        return lf, "failed"
    # After an earlier chunk found the broker down, this one is not sent: it waits, marked, for the reaper.
    lf.status, lf.error, lf.bytes_done = LocalFile.Status.QUEUED, _waiting(queue_error), 0
    lf.bytes_total = 0 if is_dir else st.st_size
    lf.stage_attempts, lf.enqueued_at = 0, None
    return lf, "queued"


def _waiting(queue_error: str) -> str:
    return f"waiting for the queue ({queue_error}); it is sent as soon as the broker is back" if queue_error else ""


def _on_its_way(lf: LocalFile) -> bool:
    """Queued with its message sent, or being worked on by a live worker. A stalled row, or one whose
    message never reached the broker, is queued again."""
    if lf.status == LocalFile.Status.QUEUED:
        return lf.enqueued_at is not None
    if lf.status in (LocalFile.Status.HASHING, LocalFile.Status.ANALYSING):
        return lf.heartbeat_at is not None and timezone.now() - lf.heartbeat_at < STALLED_AFTER
    return False
