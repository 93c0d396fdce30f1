"""Check a hand-downloaded folder (browser, aria2, mirror) against a Hub RepoIndex.

PURE: no Django. LFS files are compared by SHA-256 (the Hub publishes it), plain
git files by git blob SHA-1 (all the Hub publishes for them). A size mismatch is
decided from stat() alone. A JSON state file remembers files that already
matched, keyed by (size, mtime_ns, inode, expected hash), so re-running after
fetching the missing pieces only hashes what changed.

Exit statuses (exit_status):
  0  every file of the index is present and matches (extra local files are fine)
  1  at least one file is corrupt: wrong size, wrong hash, not a regular file, or
     an unsafe path/symlink that was refused
  2  nothing corrupt, but some files are still missing
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from workers.sources.huggingface import HubFile, RepoIndex, git_blob_sha1

__all__ = [
    "VerifyError",
    "VerifyMismatch",
    "VerifyRefusal",
    "VerifyReport",
    "verify_local_dir",
    "sha256_file",
    "exit_status",
    "EXIT_OK",
    "EXIT_MISMATCH",
    "EXIT_MISSING",
]

EXIT_OK = 0
EXIT_MISMATCH = 1
EXIT_MISSING = 2

CHUNK = 1 << 20
STATE_VERSION = 1
STATE_SAVE_INTERVAL_S = 2.0
# huggingface_hub's own bookkeeping inside local_dir downloads; never user content.
IGNORED_DIRS = (".cache/huggingface",)

ProgressFn = Callable[[int, int, str], None]


class VerifyError(Exception):
    """The folder itself cannot be verified (missing, not a directory, unreadable)."""


@dataclass(frozen=True)
class VerifyMismatch:
    path: str
    expected: str  # the Hub's hash (sha256 for LFS, git sha1 otherwise)
    actual: str | None  # the local hash; None when decided without hashing
    reason: str = "hash"  # hash | size | not_a_file | unreadable
    expected_size: int | None = None
    actual_size: int | None = None


@dataclass(frozen=True)
class VerifyRefusal:
    path: str
    reason: str


@dataclass
class VerifyReport:
    matched: list[str] = field(default_factory=list)
    mismatched: list[VerifyMismatch] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    skipped_rehash: int = 0
    refused: list[VerifyRefusal] = field(default_factory=list)
    hashed_bytes: int = 0


def exit_status(report: VerifyReport) -> int:
    if report.mismatched or report.refused:
        return EXIT_MISMATCH
    if report.missing:
        return EXIT_MISSING
    return EXIT_OK


def sha256_file(path: str | os.PathLike, on_bytes: Callable[[int], None] | None = None) -> str:
    h = hashlib.sha256()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            h.update(view[:n])
            if on_bytes is not None:
                on_bytes(n)
    return h.hexdigest()


def verify_local_dir(
    *,
    index: RepoIndex,
    local_dir: str | os.PathLike,
    state_path: str | os.PathLike | None = None,
    progress: ProgressFn | None = None,
    sha256_of: Callable[[str], str] | None = None,
) -> VerifyReport:
    """Compare `local_dir` with `index`; see the module docstring for what each list means.

    sha256_of(path) -> hex digest may be swapped for another engine; the default streams
    the file and reports progress per MiB (a custom one reports per file).
    """
    root = Path(local_dir)
    if not root.is_dir():
        raise VerifyError(f"{root} is not a directory")
    real_root = Path(os.path.realpath(root))
    state = _load_state(state_path)
    report = VerifyReport()

    to_hash: list[tuple[HubFile, Path, os.stat_result]] = []
    for hub_file in index.files:
        rel = hub_file.path
        unsafe = _unsafe_reason(rel)
        if unsafe:
            report.refused.append(VerifyRefusal(rel, unsafe))
            continue
        local = root.joinpath(*PurePosixPath(rel).parts)
        outside = _escapes(local, real_root)
        if outside:
            report.refused.append(VerifyRefusal(rel, outside))
            continue
        try:
            st = os.stat(local)
        except FileNotFoundError:
            report.missing.append(rel)
            continue
        except OSError as e:
            report.mismatched.append(_mismatch(hub_file, None, "unreadable", None, detail=str(e)))
            continue
        if not stat.S_ISREG(st.st_mode):
            report.mismatched.append(_mismatch(hub_file, None, "not_a_file", None))
            continue
        if st.st_size != hub_file.size:
            report.mismatched.append(_mismatch(hub_file, None, "size", st.st_size))
            continue
        if _state_says_matched(state.get(rel), st, _expected(hub_file)):
            report.matched.append(rel)
            report.skipped_rehash += 1
            continue
        to_hash.append((hub_file, local, st))

    total = sum(st.st_size for _, _, st in to_hash)
    done = 0
    last_save = time.monotonic()
    try:
        for hub_file, local, st in to_hash:
            rel = hub_file.path
            if progress is not None:
                progress(done, total, rel)
            try:
                actual = _hash_local(hub_file, local, sha256_of, progress, done, total)
            except OSError as e:
                report.mismatched.append(_mismatch(hub_file, None, "unreadable", st.st_size, detail=str(e)))
                state.pop(rel, None)
                done += st.st_size
                continue
            done += st.st_size
            report.hashed_bytes += st.st_size
            expected = _expected(hub_file)
            ok = actual == expected
            if ok:
                report.matched.append(rel)
            else:
                report.mismatched.append(_mismatch(hub_file, actual, "hash", st.st_size))
            after = _stat_or_none(local)
            # A file rewritten while we hashed it must not be remembered as verified.
            if after is not None and _same_stat(after, st):
                state[rel] = _state_entry(st, expected, ok)
            else:
                state.pop(rel, None)
            if state_path is not None and time.monotonic() - last_save >= STATE_SAVE_INTERVAL_S:
                _save_state(state_path, index, state)
                last_save = time.monotonic()
        if progress is not None:
            progress(done, total, "")
    finally:
        if state_path is not None:
            _save_state(state_path, index, state)

    report.extra = _extra_files(root, {f.path for f in index.files}, skip=state_path)
    report.matched.sort()
    report.missing.sort()
    report.mismatched.sort(key=lambda m: m.path)
    report.refused.sort(key=lambda r: r.path)
    return report


def _expected(hub_file: HubFile) -> str:
    expected = hub_file.sha256 if hub_file.is_lfs else hub_file.git_sha1
    if not expected:
        raise VerifyError(f"index entry {hub_file.path!r} has no hash to compare against")
    return expected


def _mismatch(hub_file: HubFile, actual, reason, actual_size, detail: str | None = None) -> VerifyMismatch:
    return VerifyMismatch(
        path=hub_file.path,
        expected=_expected(hub_file),
        actual=actual if detail is None else f"{reason}: {detail}",
        reason=reason,
        expected_size=hub_file.size,
        actual_size=actual_size,
    )


def _hash_local(hub_file: HubFile, local: Path, sha256_of, progress, done: int, total: int) -> str:
    if not hub_file.is_lfs:
        return git_blob_sha1(local)  # small files: progress per file is enough
    if sha256_of is not None:
        return sha256_of(str(local)).lower()
    if progress is None:
        return sha256_file(local)
    seen = 0

    def on_bytes(n: int) -> None:
        nonlocal seen
        seen += n
        progress(done + seen, total, hub_file.path)

    return sha256_file(local, on_bytes)


def _unsafe_reason(rel: str) -> str | None:
    """Hub paths come from the network: only plain relative paths may touch the disk."""
    if not rel or rel.startswith("/") or "\\" in rel or "\0" in rel:
        return "path is absolute or malformed"
    parts = PurePosixPath(rel).parts
    if any(p in ("..", ".") for p in parts) or (parts and ":" in parts[0]):
        return "path escapes the folder"
    return None


def _escapes(local: Path, real_root: Path) -> str | None:
    """Refuse a path whose real location (after any symlink) is outside the folder; never follow it."""
    real = Path(os.path.realpath(local))
    try:
        real.relative_to(real_root)
    except ValueError:
        return "symlink points outside the folder (not followed)"
    return None


def _stat_or_none(path: Path) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None


def _same_stat(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_size, a.st_mtime_ns, a.st_ino) == (b.st_size, b.st_mtime_ns, b.st_ino)


def _state_entry(st: os.stat_result, expected: str, ok: bool) -> dict:
    return {
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "inode": st.st_ino,
        "expected": expected,
        "result": "match" if ok else "mismatch",
    }


def _state_says_matched(entry, st: os.stat_result, expected: str) -> bool:
    # Only matches are trusted without re-reading; a mismatch is always re-checked.
    return (
        isinstance(entry, dict)
        and entry.get("result") == "match"
        and entry.get("expected") == expected
        and entry.get("size") == st.st_size
        and entry.get("mtime_ns") == st.st_mtime_ns
        and entry.get("inode") == st.st_ino
    )


def _load_state(state_path) -> dict:
    """The state file is only a cache: unreadable or foreign content means 'hash everything'."""
    if state_path is None:
        return {}
    try:
        with open(state_path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != STATE_VERSION or not isinstance(data.get("files"), dict):
        return {}
    return dict(data["files"])


def _save_state(state_path, index: RepoIndex, files: dict) -> None:
    path = Path(state_path)
    payload = {
        "version": STATE_VERSION,
        "repo_id": index.repo_id,
        "repo_type": index.repo_type,
        "revision": index.revision,
        "files": files,
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(payload, fh, indent=1, sort_keys=True)
    os.replace(tmp, path)


def _extra_files(root: Path, expected: set[str], skip=None) -> list[str]:
    skip_real = os.path.realpath(skip) if skip is not None else None
    extra = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        dirnames[:] = sorted(d for d in dirnames if f"{rel_dir}{d}" not in IGNORED_DIRS)
        # A symlinked directory shows up in dirnames but is not walked: report it as an entry.
        names = list(filenames) + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        for name in names:
            rel = f"{rel_dir}{name}"
            if rel not in expected and os.path.join(os.path.realpath(dirpath), name) != skip_real:
                extra.append(rel)
    return sorted(extra)
