"""Filesystem changes that treat every path as hostile (PURE: no Django).

The duplicate actions (hard link a copy to its keeper, move a file into
quarantine and back, delete it for good) change files in folders a hostile
user may write to. Every helper here therefore:

- opens the folder a path names one component at a time from "/", with
  O_NOFOLLOW on each (`open_dir`): a symlink anywhere on the way is refused,
  and the folder descriptor keeps naming that folder whatever is renamed or
  swapped afterwards, so the change happens where the path said, not where a
  link swapped in later points;
- acts on the final component through that descriptor (`dir_fd`), never
  following a symlink there either (lstat, O_NOFOLLOW, linkat without
  AT_SYMLINK_FOLLOW);
- checks the entry is still the file the caller checked (device, inode, size,
  mtime) right before the change, and never replaces something it did not
  check: a move uses link()+unlink(), which fails when the destination exists,
  instead of rename(), which would overwrite it.

Paths passed in are absolute and already resolved (ModelXRef stores
registered paths resolved), so a symlink component means a swap.
"""
from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

from workers.hashing import FileIdentity

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
COPY_CHUNK = 8 * 1024 * 1024
TEMP_TRIES = 20

Progress = Callable[[int, int], None]


class FileOpError(Exception):
    """A change was refused or failed; the message says why in words, and nothing was half done."""


def identity_of(st: os.stat_result) -> FileIdentity:
    return FileIdentity(device=st.st_dev, inode=st.st_ino, size=st.st_size, mtime_ns=st.st_mtime_ns)


def same_filesystem(a: os.stat_result, b: os.stat_result) -> bool:
    """Whether two entries live on one filesystem (a hard link or a rename is possible between them)."""
    return a.st_dev == b.st_dev


def identity_change(expected: FileIdentity, st: os.stat_result | None) -> str:
    """How an entry differs from what was checked, in words ('' when it is the same file, unchanged)."""
    if st is None:
        return "it is gone"
    if stat.S_ISLNK(st.st_mode):
        return "it is now a symbolic link"
    if not stat.S_ISREG(st.st_mode):
        return "it is no longer a regular file"
    if (st.st_dev, st.st_ino) != (expected.device, expected.inode):
        return "another file is in its place (device or inode differ)"
    if st.st_size != expected.size:
        return f"its size changed ({expected.size} -> {st.st_size} bytes)"
    if st.st_mtime_ns != expected.mtime_ns:
        return "it was modified (its modification time changed)"
    return ""


# --- folders ------------------------------------------------------------------------------


def open_dir(path: str | os.PathLike[str], *, create_below: str | os.PathLike[str] | None = None,
             mode: int = 0o700) -> int:
    """A descriptor of the folder `path` names, opened component by component without following a link.

    Folders missing strictly below `create_below` are created (with `mode`); any other missing
    folder, a symlink or a non-folder on the way is a FileOpError. The caller closes the descriptor.
    """
    target = Path(os.path.normpath(os.fspath(path)))
    if not target.is_absolute():
        raise FileOpError(f"{target}: not an absolute path")
    floor = len(Path(os.path.normpath(os.fspath(create_below))).parts) if create_below is not None else None
    if floor is not None and not target.is_relative_to(os.path.normpath(os.fspath(create_below))):
        floor = None
    parts = target.parts
    fd = os.open(parts[0], DIR_FLAGS)
    try:
        for depth, part in enumerate(parts[1:], start=2):
            try:
                child = os.open(part, DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if floor is None or depth <= floor:
                    raise FileOpError(f"{Path(*parts[:depth])}: no such folder") from None
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, mode, dir_fd=fd)
                child = _open_child_dir(fd, part, Path(*parts[:depth]))
            except OSError as exc:
                raise _dir_error(exc, Path(*parts[:depth])) from None
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_child_dir(fd: int, part: str, shown: Path) -> int:
    try:
        return os.open(part, DIR_FLAGS, dir_fd=fd)
    except OSError as exc:
        raise _dir_error(exc, shown) from None


def _dir_error(exc: OSError, shown: Path) -> FileOpError:
    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
        return FileOpError(f"{shown}: is a symbolic link or not a folder (it was a folder when the file was registered)")
    if exc.errno == errno.EACCES:
        return FileOpError(f"{shown}: permission denied")
    return FileOpError(f"{shown}: cannot open the folder: {exc.strerror or exc}")


@contextlib.contextmanager
def pinned_parent(path: str | os.PathLike[str], *, create_below: str | os.PathLike[str] | None = None,
                  mode: int = 0o700) -> Iterator[tuple[int, str]]:
    """(descriptor of the parent folder, final name) of `path`; see open_dir."""
    target = Path(os.path.normpath(os.fspath(path)))
    if target.name in ("", ".", ".."):
        raise FileOpError(f"{target}: not a file path")
    fd = open_dir(target.parent, create_below=create_below, mode=mode)
    try:
        yield fd, target.name
    finally:
        os.close(fd)


def lstat_at(dir_fd: int, name: str) -> os.stat_result | None:
    """lstat of `name` in the folder; None when nothing is there."""
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _fsync_dir(dir_fd: int) -> None:
    with contextlib.suppress(OSError):  # some filesystems refuse fsync on folders; the change is still made
        os.fsync(dir_fd)


def _temp_name(name: str, tag: str) -> str:
    # Hidden, beside the target, and long enough never to collide with a real name.
    return f".{name[:150]}.mxr-{tag}-{secrets.token_hex(6)}"


def _check(dir_fd: int, name: str, expected: FileIdentity, what: str) -> os.stat_result:
    st = lstat_at(dir_fd, name)
    change = identity_change(expected, st)
    if change:
        raise FileOpError(f"{what} changed since it was checked: {change}")
    return st


# --- hard links -------------------------------------------------------------------------


def hardlink_over(*, src_dir_fd: int, src_name: str, src_expect: FileIdentity, dst_dir_fd: int, dst_name: str,
                  dst_expect: FileIdentity) -> os.stat_result:
    """Replace `dst` with a hard link to `src`, atomically: readers of `dst` see the old file or the
    keeper, never nothing. Link src to a temporary name beside dst (linkat, not following a symlink),
    check the link is the keeper and dst is still the checked copy, then rename it over dst.
    Returns the stat of the keeper's inode as linked."""
    temp = None
    for _ in range(TEMP_TRIES):
        candidate = _temp_name(dst_name, "link")
        try:
            os.link(src_name, candidate, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd, follow_symlinks=False)
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno == errno.EXDEV:
                raise FileOpError("the keeper is on another filesystem: a hard link cannot cross filesystems") from None
            if exc.errno in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK):
                raise FileOpError(f"this filesystem refused a hard link: {exc.strerror or exc}") from None
            if exc.errno == errno.ENOENT:
                raise FileOpError("the keeper is gone") from None
            raise FileOpError(f"cannot make the hard link: {exc.strerror or exc}") from None
        temp = candidate
        break
    if temp is None:
        raise FileOpError("cannot find a free temporary name beside the copy")
    try:
        linked = _check(dst_dir_fd, temp, src_expect, "the keeper")  # a symlink or another file swapped in
        _check(dst_dir_fd, dst_name, dst_expect, "the copy")
        os.replace(temp, dst_name, src_dir_fd=dst_dir_fd, dst_dir_fd=dst_dir_fd)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(temp, dir_fd=dst_dir_fd)
        if isinstance(exc, OSError):
            raise FileOpError(f"cannot replace the copy: {exc.strerror or exc}") from None
        raise
    _fsync_dir(dst_dir_fd)
    return linked


# --- moves ----------------------------------------------------------------------------------


def move_no_replace(*, src_dir_fd: int, src_name: str, expect: FileIdentity, dst_dir_fd: int, dst_name: str,
                    same_fs: bool, progress: Progress | None = None) -> tuple[os.stat_result, str]:
    """Move a regular file to dst without ever replacing what is there. Returns (stat of the file at
    dst, "rename" or "copy").

    Same filesystem: link dst to it, then unlink the source (a rename that fails when dst exists).
    Across filesystems (or where hard links are refused): copy to a temporary name beside dst,
    fsync it, give it the source's mode and times, put it in place without replacing anything,
    fsync the folder, and only then unlink the source. The source is checked again (same inode,
    size, mtime) before it is unlinked: a file changed meanwhile is left where it was.
    """
    _check(src_dir_fd, src_name, expect, "the file")
    if lstat_at(dst_dir_fd, dst_name) is not None:
        raise FileOpError(f"something is already at the destination ({dst_name})")
    how = "rename"
    moved = None
    if same_fs:
        try:
            os.link(src_name, dst_name, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd, follow_symlinks=False)
        except FileExistsError:
            raise FileOpError(f"something is already at the destination ({dst_name})") from None
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK):
                raise FileOpError(f"cannot move the file: {exc.strerror or exc}") from None
        else:
            moved = lstat_at(dst_dir_fd, dst_name)
            if identity_change(expect, moved):
                _unlink_if(dst_dir_fd, dst_name, moved)
                raise FileOpError("the file changed while it was being moved: left where it was")
    if moved is None:
        how = "copy"
        moved = _copy_into_place(src_dir_fd, src_name, expect, dst_dir_fd, dst_name, progress)
    _fsync_dir(dst_dir_fd)
    try:
        _check(src_dir_fd, src_name, expect, "the file")
    except FileOpError:
        # Someone changed the source after we copied or linked it: keep theirs, drop ours.
        _unlink_if(dst_dir_fd, dst_name, moved)
        raise
    os.unlink(src_name, dir_fd=src_dir_fd)
    _fsync_dir(src_dir_fd)
    return moved, how


def _unlink_if(dir_fd: int, name: str, st: os.stat_result | None) -> None:
    now = lstat_at(dir_fd, name)
    if st is not None and now is not None and (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino):
        with contextlib.suppress(OSError):
            os.unlink(name, dir_fd=dir_fd)


def _copy_into_place(src_dir_fd: int, src_name: str, expect: FileIdentity, dst_dir_fd: int, dst_name: str,
                     progress: Progress | None) -> os.stat_result:
    try:
        src = os.open(src_name, READ_FLAGS, dir_fd=src_dir_fd)
    except OSError as exc:
        raise FileOpError(f"cannot open the file: {exc.strerror or exc}") from None
    try:
        before = os.fstat(src)
        change = identity_change(expect, before)
        if change:
            raise FileOpError(f"the file changed since it was checked: {change}")
        temp, out = _create_temp(dst_dir_fd, dst_name)
        try:
            try:
                _copy_bytes(src, out, before.st_size, progress)
                os.fchmod(out, stat.S_IMODE(before.st_mode))
                os.utime(out, ns=(before.st_atime_ns, before.st_mtime_ns))
                os.fsync(out)
            finally:
                os.close(out)
            after = os.fstat(src)
            if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
                raise FileOpError("the file changed while it was being copied: left where it was")
            try:
                os.link(temp, dst_name, src_dir_fd=dst_dir_fd, dst_dir_fd=dst_dir_fd, follow_symlinks=False)
            except FileExistsError:
                raise FileOpError(f"something is already at the destination ({dst_name})") from None
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK):
                    raise FileOpError(f"cannot put the copy in place: {exc.strerror or exc}") from None
                # No hard links here: rename, having checked just above that nothing is there.
                if lstat_at(dst_dir_fd, dst_name) is not None:
                    raise FileOpError(f"something is already at the destination ({dst_name})") from None
                os.rename(temp, dst_name, src_dir_fd=dst_dir_fd, dst_dir_fd=dst_dir_fd)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=dst_dir_fd)
        placed = lstat_at(dst_dir_fd, dst_name)
        if placed is None:
            raise FileOpError("the copy vanished from its destination")
        return placed
    finally:
        os.close(src)


def _create_temp(dir_fd: int, name: str) -> tuple[str, int]:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    for _ in range(TEMP_TRIES):
        temp = _temp_name(name, "copy")
        try:
            return temp, os.open(temp, flags, 0o600, dir_fd=dir_fd)
        except FileExistsError:
            continue
        except OSError as exc:
            raise FileOpError(f"cannot create the copy: {exc.strerror or exc}") from None
    raise FileOpError("cannot find a free temporary name at the destination")


def _copy_bytes(src: int, out: int, size: int, progress: Progress | None) -> None:
    done = 0
    while True:
        try:
            n = os.copy_file_range(src, out, COPY_CHUNK)
        except (AttributeError, OSError):
            n = _copy_chunk_by_read(src, out)
        if n == 0:
            break
        done += n
        if progress is not None:
            progress(done, size)
    if done != size:
        raise FileOpError(f"copied {done} bytes but the file had {size}: left where it was")


def _copy_chunk_by_read(src: int, out: int) -> int:
    data = os.read(src, COPY_CHUNK)
    view = memoryview(data)
    while view:
        written = os.write(out, view)
        view = view[written:]
    return len(data)


# --- deletes ------------------------------------------------------------------------------------


def unlink_checked(*, dir_fd: int, name: str, expect: FileIdentity) -> os.stat_result:
    """Delete `name` if it is still the checked file; returns its stat from just before (st_nlink says
    whether its data is freed: 1, or still held by other hard links)."""
    st = _check(dir_fd, name, expect, "the file")
    try:
        os.unlink(name, dir_fd=dir_fd)
    except OSError as exc:
        raise FileOpError(f"cannot delete the file: {exc.strerror or exc}") from None
    _fsync_dir(dir_fd)
    return st


def remove_empty_dirs(path: str | os.PathLike[str], *, stop_at: str | os.PathLike[str]) -> None:
    """Remove `path` and its parents while they are empty, never `stop_at` or anything above it."""
    here = Path(os.path.normpath(os.fspath(path)))
    floor = Path(os.path.normpath(os.fspath(stop_at)))
    while here != floor and here.is_relative_to(floor):
        try:
            with pinned_parent(here) as (fd, name):
                os.rmdir(name, dir_fd=fd)
        except (OSError, FileOpError):
            return  # not empty, gone, or not ours to remove: stop there
        here = here.parent
