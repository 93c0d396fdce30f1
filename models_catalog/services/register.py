"""Register files and folders in place: the CLI's and the web's way into the pipeline."""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from django.db import transaction

from models_catalog.models import FileHashes, LocalFile
from models_catalog.services.enqueue import enqueue_hashing
from models_catalog.services.paths import PathRefused, describe_special, model_roots, printable, resolve_under_roots
from workers.hashing import is_diffusers_folder

# Files named like models are always taken (so a PNG named .pt is reported,
# not skipped); anything else is taken only if its content is a model format.
MODEL_SUFFIXES = frozenset({".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".pkl", ".gguf", ".sft", ".npy", ".npz"})
MODEL_FORMATS = frozenset({"safetensors", "torch-zip", "torch-legacy", "torch-tar", "pickle", "npy", "npz", "gguf", "7z"})


@dataclass
class RegisterOutcome:
    queued: list[LocalFile] = field(default_factory=list)
    unchanged: list[LocalFile] = field(default_factory=list)
    failed: list[LocalFile] = field(default_factory=list)  # stored with an error (e.g. a FIFO)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (path as given, why)

    @property
    def files(self) -> list[LocalFile]:
        return self.queued + self.unchanged + self.failed


def is_model_candidate(path: Path) -> bool:
    if path.suffix.lower() in MODEL_SUFFIXES:
        return True
    from workers.modelfiles.sniff import sniff  # noqa: PLC0415 - keeps the import cost off the CLI start
    from workers.modelfiles.types import ModelFileError

    try:
        return sniff(path) in MODEL_FORMATS
    except (ModelFileError, OSError):
        return False


def _walk_units(folder: Path, roots: list[Path], refused: list[tuple[str, str]]):
    """Yield (path, stat) of model files and diffusers folders under `folder`, never leaving the roots."""
    if is_diffusers_folder(folder):
        yield folder, folder.stat()
        return
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        here = Path(dirpath)
        kept = []
        for d in sorted(dirnames):
            sub = here / d
            if d.startswith("."):
                continue  # .cache, .git: tool state, not models
            if sub.is_symlink():
                refused.append((str(sub), "symlinked folders are not followed; register their target directly"))
                continue
            if is_diffusers_folder(sub):
                yield sub, sub.stat()
            else:
                kept.append(d)
        dirnames[:] = kept
        for name in sorted(filenames):
            entry = here / name
            try:
                target = resolve_under_roots(entry, roots=roots)
                st = target.stat()
            except PathRefused as exc:
                refused.append((str(entry), str(exc)))
                continue
            except OSError as exc:
                refused.append((str(entry), f"cannot stat: {exc.strerror or exc}"))
                continue
            # Special files met while walking are skipped: only a path named
            # explicitly gets a stored error row.
            if stat.S_ISREG(st.st_mode) and st.st_size > 0 and is_model_candidate(target):
                yield target, st


def local_file_register(*, paths: list[str], owner, roots: list[Path] | None = None) -> RegisterOutcome:
    """Create or refresh LocalFile rows for `paths` and queue the changed ones for hashing.

    Unchanged files (same device, inode, size and mtime as when last hashed)
    cost a stat: no read, no task.
    """
    outcome = RegisterOutcome()
    roots = model_roots() if roots is None else roots
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
        if stat.S_ISDIR(st.st_mode):
            for unit, unit_st in _walk_units(resolved, roots, outcome.refused):
                units.setdefault(unit, (unit_st, ""))
        else:
            units.setdefault(resolved, (st, describe_special(st.st_mode) or ""))

    existing = {
        lf.path: lf
        for lf in LocalFile.objects.filter(
            owner=owner, origin=LocalFile.Origin.REGISTERED, host="", path__in=[str(p) for p in units]
        ).select_related("hashes")
    }
    with transaction.atomic():
        for path, (st, special) in units.items():
            _register_one(path=path, st=st, special=special, owner=owner, existing=existing.get(str(path)), outcome=outcome)
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
        if same and existing.status in {LocalFile.Status.QUEUED, LocalFile.Status.HASHING, LocalFile.Status.ANALYSING}:
            outcome.unchanged.append(existing)  # already on its way
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
    lf.save()
    enqueue_hashing(lf.pk)
    outcome.queued.append(lf)
