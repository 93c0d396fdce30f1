"""Register files and folders in place: the CLI's and the web's way into the pipeline."""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from django.db import IntegrityError, transaction
from django.utils import timezone

from models_catalog.models import LocalFile
from models_catalog.services.pipeline import QueueUnavailable, enqueue_hashing_many
from models_catalog.services.file_actions import in_quarantine, quarantine_places
from models_catalog.services.heartbeat import STALLED_AFTER_SECONDS
from models_catalog.services.paths import PathRefused, describe_special, model_roots_for, printable, resolve_under_roots
from workers.discovery import iter_model_units

QUARANTINED = "it is in ModelXRef's quarantine folder: restore it from the Quarantine page instead"
# A row whose heartbeat is this old lost its worker (see services/heartbeat.py).
STALLED_AFTER = timedelta(seconds=STALLED_AFTER_SECONDS)


@dataclass
class RegisterOutcome:
    queued: list[LocalFile] = field(default_factory=list)
    unchanged: list[LocalFile] = field(default_factory=list)
    failed: list[LocalFile] = field(default_factory=list)  # stored with an error (e.g. a FIFO)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (path as given, why)
    queue_error: str = ""  # the broker was down: the queued rows wait, and are sent when it is back

    @property
    def files(self) -> list[LocalFile]:
        return self.queued + self.unchanged + self.failed


def local_file_register(*, paths: list[str], owner, roots: list[Path] | None = None) -> RegisterOutcome:
    """Create or refresh LocalFile rows for `paths` and queue the changed ones for hashing.

    Unchanged files (same device, inode, size and mtime as when last hashed)
    cost a stat: no read, no task. Paths must lie under `roots`, by default the
    owner's (`model_roots_for`).
    """
    outcome = RegisterOutcome()
    roots = model_roots_for(owner) if roots is None else roots
    quarantines = quarantine_places()
    units: dict[Path, tuple[os.stat_result, str]] = {}
    for raw in paths:
        try:
            resolved = resolve_under_roots(raw, roots=roots)
            st = resolved.stat()
        except PathRefused as exc:
            outcome.refused.append((printable(raw), str(exc)))
            continue
        except OSError as exc:
            outcome.refused.append((printable(raw), f"cannot stat: {exc.strerror or exc}"))
            continue
        if in_quarantine(resolved, places=quarantines):
            outcome.refused.append((printable(raw), QUARANTINED))
            continue
        if stat.S_ISDIR(st.st_mode):
            units_found = iter_model_units(
                resolved,
                resolve=lambda p: resolve_under_roots(p, roots=roots),
                on_skip=lambda p, why: outcome.refused.append((printable(p), why)),
            )
            for unit, unit_st in units_found:
                if in_quarantine(unit, places=quarantines):  # a quarantine folder inside a root is not walked into the catalog
                    continue
                units.setdefault(unit, (unit_st, ""))
        else:
            units.setdefault(resolved, (st, describe_special(st.st_mode) or ""))

    existing = {
        lf.path: lf
        for lf in LocalFile.objects.filter(
            owner=owner, origin=LocalFile.Origin.REGISTERED, host="", path__in=[str(p) for p in units]
        ).select_related("hashes")
    }
    try:
        with transaction.atomic():
            for path, (st, special) in units.items():
                _register_one(path=path, st=st, special=special, owner=owner, existing=existing.get(str(path)),
                              outcome=outcome)
            enqueue_hashing_many(local_files=outcome.queued)
    except QueueUnavailable as exc:
        # The rows are committed and marked "waiting for the queue": the reaper sends them later.
        outcome.queue_error = str(exc)
    return outcome


def _identity(st: os.stat_result) -> dict:
    is_dir = stat.S_ISDIR(st.st_mode)
    # A folder's own size/mtime says little about its weights; the hashing
    # stage fills size with the sum of its members.
    return {"device": st.st_dev, "inode": st.st_ino, "mtime_ns": st.st_mtime_ns, **({} if is_dir else {"size": st.st_size})}


def _register_one(*, path: Path, st: os.stat_result, special: str, owner, existing: LocalFile | None, outcome: RegisterOutcome):
    identity = _identity(st)
    is_dir = stat.S_ISDIR(st.st_mode)
    if existing is not None:
        same = all(getattr(existing, k) == v for k, v in identity.items())
        # Folders are always re-queued: a member can change without touching the
        # folder's own mtime, and the hash cache keeps the rehash cheap.
        if same and existing.status == LocalFile.Status.DONE and existing.has_engine_hashes and not is_dir:
            outcome.unchanged.append(existing)
            return
        if same and _on_its_way(existing):
            outcome.unchanged.append(existing)
            return
        lf = existing
        for k, v in identity.items():
            setattr(lf, k, v)
    else:
        lf = LocalFile(owner=owner, origin=LocalFile.Origin.REGISTERED, path=str(path), name=path.name[:255],
                       is_folder=is_dir, **identity)
    if special:
        lf.status, lf.error = LocalFile.Status.ERROR, special
        lf.save()
        outcome.failed.append(lf)
        return
    lf.status, lf.error, lf.bytes_done = LocalFile.Status.QUEUED, "", 0
    lf.bytes_total = 0 if is_dir else st.st_size
    lf.stage_attempts, lf.enqueued_at = 0, None
    try:
        with transaction.atomic():  # a savepoint: another register of the same path may have won the race
            lf.save()
    except IntegrityError:
        # Two registers of one folder at once: the other one created (and queues) this row.
        outcome.unchanged.append(LocalFile.objects.get(owner=owner, origin=lf.origin, host="", path=lf.path))
        return
    outcome.queued.append(lf)  # queued for hashing, in chunks, once all are saved


def _on_its_way(lf: LocalFile) -> bool:
    """Queued with its message sent, or being worked on by a live worker. A stalled row, or one whose
    message never reached the broker, is queued again."""
    if lf.status == LocalFile.Status.QUEUED:
        return lf.enqueued_at is not None
    if lf.status in (LocalFile.Status.HASHING, LocalFile.Status.ANALYSING):
        return lf.heartbeat_at is not None and timezone.now() - lf.heartbeat_at < STALLED_AFTER
    return False
