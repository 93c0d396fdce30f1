"""Diffusers (and other multi-file) folders: every weight file hashed, and InvokeAI's folder digest (PURE).

Import hash_folder / is_diffusers_folder through workers.hashing.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from workers.hash_engine import file_kind, stat_regular_file
from workers.hash_records import (
    WEIGHT_SUFFIXES,
    ComputedMember,
    FolderHashes,
    HashingError,
    Progress,
    invokeai_folder_digest,
    invokeai_sort_key,
)

if TYPE_CHECKING:
    from workers.hash_cache import HashCache


def is_diffusers_folder(path: str | os.PathLike[str]) -> bool:
    try:
        return os.path.isdir(path) and os.path.isfile(os.path.join(path, "model_index.json"))
    except (OSError, ValueError):
        return False


def _refuse_escapes(files: list[tuple[str, str]], roots: list[str]) -> None:
    for relative, full in files:
        real = os.path.realpath(full)
        if not any(real == r or real.startswith(r.rstrip(os.sep) + os.sep) for r in roots):
            raise HashingError(f"{relative} resolves to {real}, outside the allowed folders: refused")


def _weight_files(folder: str) -> list[tuple[str, str]]:
    def fail(exc: OSError) -> None:
        raise HashingError(f"{folder}: cannot list {exc.filename}: {exc.strerror or exc}")

    found = []
    for root, _dirs, files in os.walk(folder, onerror=fail):
        for name in files:
            if name.endswith(WEIGHT_SUFFIXES):
                full = os.path.join(root, name)
                found.append((Path(os.path.relpath(full, folder)).as_posix(), full))
    found.sort(key=lambda item: invokeai_sort_key(item[0]))
    return found


def hash_folder(
    path: str | os.PathLike[str],
    progress: Progress | None = None,
    *,
    cache: HashCache | None = None,
    allowed_roots: Sequence[str | os.PathLike[str]] | None = None,
) -> FolderHashes:
    """Hash every weight file under a folder, and InvokeAI's folder digest over them.

    Members are all WEIGHT_SUFFIXES files; the digest counts only InvokeAI's
    five suffixes so it equals InvokeAI's `blake3:` folder hash. With
    `allowed_roots`, a member that resolves (through a symlink) outside every
    root is refused before it is opened: a registered folder must not become a
    way to read files elsewhere.
    """
    from workers.hash_cache import hash_file_cached  # the cache module imports this one

    folder = os.fspath(path)
    try:
        st = os.stat(folder)
    except FileNotFoundError:
        raise HashingError(f"{folder}: no such folder") from None
    except OSError as exc:
        raise HashingError(f"{folder}: cannot stat: {exc.strerror or exc}") from exc
    if not stat.S_ISDIR(st.st_mode):
        raise HashingError(f"{folder}: not a folder ({file_kind(st.st_mode)})")
    files = _weight_files(folder)
    if allowed_roots is not None:
        _refuse_escapes(files, [os.path.realpath(r) for r in allowed_roots])
    if not files:
        raise HashingError(f"{folder}: no weight files ({', '.join(WEIGHT_SUFFIXES)}) to hash")
    grand_total = sum(stat_regular_file(full).st_size for _rel, full in files)
    done_before = 0
    members = []
    for relative, full in files:
        member_progress = None
        if progress is not None:
            member_progress = lambda done, _total, base=done_before: progress(base + done, grand_total)  # noqa: E731
        hashes, _hit = hash_file_cached(full, cache=cache, progress=member_progress)
        members.append(ComputedMember(relative_path=relative, hashes=hashes))
        done_before += hashes.size
    digest = invokeai_folder_digest(m.hashes.blake3 for m in members if m.in_invokeai_digest)
    return FolderHashes(size=sum(m.hashes.size for m in members), digest=digest, members=tuple(members))
