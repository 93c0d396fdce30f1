"""Finding the files to push and turning each into a record: hashes, and the analysis unless --no-analyse (PURE).

Files are found by content (workers.discovery), hashed by the same engine as
the server's workers (with the same identity-keyed HashCache) and analysed
without executing anything (workers.modelfiles.analyse). A diffusers folder is
one unit and one "kind": "folder" record, as the server stores a registered folder.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workers.discovery import iter_model_units
from workers.hash_cache import HashCache, HashCacheError, hash_file_cached_with_identity
from workers.hashing import (
    WEIGHT_SUFFIXES,
    FileIdentity,
    HashingError,
    file_identity,
    hash_folder,
)
from workers.push.report import PushReport, PushUsageError
from workers.push.state import PushState

# --------------------------------------------------------------------------
# Finding the files


@dataclass(frozen=True)
class Unit:
    path: str  # absolute
    size: int  # from the walk, for the progress bar only
    is_folder: bool = False  # a diffusers folder, pushed as one record


def _folder_weight_files(folder: Path) -> list[Path]:
    """A diffusers folder's weight files, as the hash engine's folder hash lists them."""
    def fail(exc: OSError) -> None:
        raise HashingError(f"{folder}: cannot list {exc.filename}: {exc.strerror or exc}")

    found = []
    for root, _dirs, names in os.walk(folder, onerror=fail):
        for name in names:
            if name.endswith(WEIGHT_SUFFIXES):
                found.append(Path(root) / name)
    return sorted(found)


def _regular_size(path: Path) -> int | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


def collect_units(paths: Iterable[str | os.PathLike[str]], *, report: PushReport) -> list[Unit]:
    """Files to push, in a stable order, without duplicates.

    Inside folders, special files (FIFOs, sockets) are skipped silently by
    discovery; a path named explicitly is kept, so hashing reports it.
    """
    units: dict[str, Unit] = {}

    def add(path: Path, size: int | None, *, is_folder: bool = False) -> None:
        units.setdefault(str(path), Unit(str(path), size or 0, is_folder))

    def add_folder(folder: Path) -> None:
        try:
            members = _folder_weight_files(folder)
        except HashingError as exc:
            report.failed.append((str(folder), str(exc)))
            return
        # Special files among a folder's members are skipped, as discovery does.
        regular = [(m, _regular_size(m)) for m in members]
        regular = [(m, s) for m, s in regular if s is not None]
        if not regular:
            report.failed.append((str(folder), f"diffusers folder without weight files ({', '.join(WEIGHT_SUFFIXES)})"))
            return
        add(folder, sum(s for _m, s in regular), is_folder=True)

    for raw in paths:
        given = Path(os.fspath(raw)).expanduser()
        target = given.resolve()
        try:
            st = target.stat()
        except FileNotFoundError:
            report.failed.append((str(given), "no such file or folder"))
            continue
        except OSError as exc:
            report.failed.append((str(given), f"cannot stat: {exc.strerror or exc}"))
            continue
        if not stat.S_ISDIR(st.st_mode):
            add(target, st.st_size if stat.S_ISREG(st.st_mode) else 0)
            continue
        try:
            for unit, unit_st in iter_model_units(target, on_skip=lambda p, why: report.passed_over.append((str(p), why))):
                if stat.S_ISDIR(unit_st.st_mode):
                    add_folder(unit)
                else:
                    add(unit, unit_st.st_size)
        except OSError as exc:  # a folder vanishing under the walk
            report.failed.append((str(given), f"cannot walk: {exc.strerror or exc}"))
    return list(units.values())


# --------------------------------------------------------------------------
# Hashing and analysis


@dataclass
class Pending:
    path: str
    analysed: bool
    record: dict[str, Any]
    encoded_size: int
    identity: FileIdentity | None = None  # a file
    sha256: str = ""
    members_identity: str | None = None  # a diffusers folder
    folder_digest: str = ""

    def remember(self, state: PushState) -> None:
        if self.members_identity is not None:
            state.record_folder(self.path, members_identity=self.members_identity, folder_digest=self.folder_digest,
                                analysed=self.analysed)
        else:
            assert self.identity is not None
            state.record(self.path, self.identity, sha256=self.sha256, analysed=self.analysed)


def prepare(unit: Unit, *, state: PushState, cache: HashCache, analyse: bool, report: PushReport,
            bytes_progress: Callable[[int, int], None]) -> Pending | None:
    """The record for one file, or None if the server already has it as it is."""
    if unit.is_folder:
        return _prepare_folder(unit, state=state, cache=cache, analyse=analyse, report=report,
                               bytes_progress=bytes_progress)
    identity = file_identity(unit.path)  # refuses FIFOs and other special files without opening them
    if state.is_pushed(unit.path, identity, need_analysis=analyse):
        report.skipped_unchanged += 1
        return None
    try:
        hashes, identity, _hit = hash_file_cached_with_identity(unit.path, cache=cache, progress=bytes_progress)
    except HashCacheError as exc:
        raise PushUsageError(str(exc)) from exc
    record = {"path": unit.path, "hashes": hashes.to_json(), **_analysis_fields(unit.path, analyse=analyse)}
    return Pending(unit.path, analyse, record, _encoded_size(record), identity=identity, sha256=hashes.sha256)


def folder_members_identity(folder: str | os.PathLike[str]) -> str:
    """SHA256 over the sorted (relative path, device, inode, size, mtime_ns) of a folder's weight files.

    Taken before hashing: a member changing meanwhile leaves an identity that
    no longer matches, so the next run sends the folder again.
    """
    root = Path(folder)
    rows = []
    for member in _folder_weight_files(root):
        ident = file_identity(member)  # refuses FIFOs and other special files without opening them
        rows.append((member.relative_to(root).as_posix(), ident.device, ident.inode, ident.size, ident.mtime_ns))
    return hashlib.sha256(json.dumps(sorted(rows), separators=(",", ":")).encode("utf-8")).hexdigest()


def _prepare_folder(unit: Unit, *, state: PushState, cache: HashCache, analyse: bool, report: PushReport,
                    bytes_progress: Callable[[int, int], None]) -> Pending | None:
    members_identity = folder_members_identity(unit.path)
    if state.is_folder_pushed(unit.path, members_identity, need_analysis=analyse):
        report.skipped_unchanged += 1
        return None
    try:
        folder = hash_folder(unit.path, bytes_progress, cache=cache)
    except HashCacheError as exc:
        raise PushUsageError(str(exc)) from exc
    member_paths = [m.relative_path for m in folder.members]
    record = {"path": unit.path, "kind": "folder", "folder": folder.to_json(),
              **_analysis_fields(unit.path, analyse=analyse, member_paths=member_paths)}
    return Pending(unit.path, analyse, record, _encoded_size(record), members_identity=members_identity,
                   folder_digest=folder.digest)


def _encoded_size(record: dict[str, Any]) -> int:
    return len(json.dumps(record, separators=(",", ":")).encode("utf-8"))


def _analysis_fields(path: str, *, analyse: bool, member_paths: list[str] | None = None) -> dict[str, Any]:
    from workers.modelfiles.analyse import analyse_path

    if not analyse:
        return {"format": _sniff_quietly(path), "fingerprint": None, "safety": None, "architecture": None}
    try:
        result = analyse_path(Path(path), member_paths=member_paths)
    except Exception as exc:  # a reader bug must not stop the push; the server is told why
        finding = {"severity": "unreadable", "what": "analysis", "where": "", "why": f"internal error: {exc}"}
        return {"format": _sniff_quietly(path), "fingerprint": None,
                "safety": {"verdict": "unreadable", "findings": [finding]}, "architecture": None}
    return {"format": result.format, "fingerprint": result.fingerprint,
            "safety": {"verdict": result.verdict, "findings": result.findings}, "architecture": result.architecture}


def _sniff_quietly(path: str) -> str:
    from workers.modelfiles.sniff import sniff

    try:
        return sniff(path)
    except Exception:  # noqa: BLE001 - the format is informative; the hashes are the record
        return "unknown"
