"""The single-file engine: one read of a model file, every hash from that one stream (PURE: no Django).

See workers.hashing for the design (threads, ring of page-aligned buffers) and
import hash_file / hash_file_and_identity / file_identity from there. The
tunables below (RING_DEPTH, BLAKE3_MAX_THREADS...) are read from this module
at call time: bench/hashing.py's sweep sets them here.
"""

from __future__ import annotations

import errno
import hashlib
import json
import mmap
import os
import queue
import stat
import threading
import time
from typing import Any

import blake3 as _blake3_module

from workers.hash_records import (
    AUTOV1_LENGTH,
    AUTOV1_MIN_SIZE,
    AUTOV1_OFFSET,
    AUTOV3_LEGACY_HEADER_LIMIT,
    EMBEDDED_HEADER_LIMIT,
    ComputedHashes,
    FileChangedError,
    FileIdentity,
    HashingError,
    MiB,
    Progress,
    SymlinkRefused,
    embedded_value,
)

try:  # isal's crc32 runs at tens of GB/s on this machine, zlib's at ~5.
    from isal.isal_zlib import crc32 as _crc32

    CRC32_IMPLEMENTATION = "isal"
except ImportError:  # pragma: no cover - isal is a pinned runtime dependency
    from zlib import crc32 as _crc32

    CRC32_IMPLEMENTATION = "zlib"

DEFAULT_BUFFER_SIZE = 8 * MiB
RING_DEPTH = 4
MAX_TRIES = 3
PROGRESS_INTERVAL_S = 0.25
# Below this size thread start-up costs more than the hashing: hash inline.
INLINE_LIMIT = 1 * MiB
# BLAKE3 gets one thread: on 2 cores both are already busy with the two
# SHA-256 streams (see docs/BENCHMARKS.md).
BLAKE3_MAX_THREADS = 1


# Test only: caps the engine's read speed (bytes per second) so that an end-to-end fault test can kill a
# worker while it is still hashing a file of a few MB (tests/e2e/test_worker_faults.py). Unset or 0: off,
# which is what every real run has.
TEST_PACE_ENV = "MODELXREF_TEST_HASH_BYTES_PER_SECOND"



def file_identity(path: str | os.PathLike[str], *, follow_symlinks: bool = True) -> FileIdentity:
    """Identity of a regular file for caching; the caller passes a resolved path."""
    st = stat_regular_file(os.fspath(path), follow_symlinks=follow_symlinks)
    return _identity(st)


def hash_file(
    path: str | os.PathLike[str],
    progress: Progress | None = None,
    *,
    buffer_size: int = DEFAULT_BUFFER_SIZE,
) -> ComputedHashes:
    """All six hashes of a regular file from one read; see hash_file_and_identity."""
    return hash_file_and_identity(path, progress, buffer_size=buffer_size)[0]


def hash_file_and_identity(
    path: str | os.PathLike[str],
    progress: Progress | None = None,
    *,
    buffer_size: int = DEFAULT_BUFFER_SIZE,
    follow_symlinks: bool = True,
) -> tuple[ComputedHashes, FileIdentity]:
    """Hash a file and return the identity it had, unchanged, while being read.

    The identity is what a cache must key on: it is checked (stat before and
    after, fstat of the open descriptor, byte count) around the read that
    produced the hashes. A file that changes is hashed again, up to MAX_TRIES.
    follow_symlinks=False refuses a symlink as the last path component, at
    stat time and again at open time (O_NOFOLLOW): for paths resolved earlier
    that a hostile user may have swapped for a link since.
    """
    if buffer_size < 1:
        raise ValueError(f"buffer_size must be positive, got {buffer_size}")
    path = os.fspath(path)
    last_change = ""
    for _ in range(MAX_TRIES):
        before = stat_regular_file(path, follow_symlinks=follow_symlinks)
        fd = _open_for_reading(path, follow_symlinks=follow_symlinks)
        try:
            opened = os.fstat(fd)
            if not stat.S_ISREG(opened.st_mode) or (opened.st_dev, opened.st_ino) != (before.st_dev, before.st_ino):
                last_change = "it was replaced between stat and open"
                continue
            try:
                hashes, bytes_read, stream_head_ok = _hash_open_file(
                    fd, size=before.st_size, progress=progress, buffer_size=buffer_size
                )
                fd_after = os.fstat(fd)
            except OSError as exc:
                raise HashingError(f"{path}: read failed: {exc.strerror or exc}") from exc
        finally:
            os.close(fd)
        try:
            after = os.stat(path)
        except FileNotFoundError:
            raise HashingError(f"{path}: vanished while being hashed") from None
        except OSError as exc:
            raise HashingError(f"{path}: cannot stat after hashing: {exc.strerror or exc}") from exc
        last_change = _describe_change(before, fd_after, after, bytes_read, stream_head_ok)
        if not last_change:
            return hashes, _identity(before)
    raise FileChangedError(f"{path}: kept changing while being hashed ({MAX_TRIES} tries; last: {last_change})")


def _describe_change(
    before: os.stat_result, fd_after: os.stat_result, after: os.stat_result, bytes_read: int, stream_head_ok: bool
) -> str:
    if (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino):
        return "the path now names a different file"
    for label, st in (("open file", fd_after), ("path", after)):
        if st.st_size != before.st_size:
            return f"{label} size went from {before.st_size} to {st.st_size}"
        if st.st_mtime_ns != before.st_mtime_ns:
            return f"{label} mtime changed"
    if bytes_read != before.st_size:
        return f"read {bytes_read} bytes but the file had {before.st_size}"
    if not stream_head_ok:
        return "its first bytes changed during the read"
    return ""


def stat_regular_file(path: str, *, follow_symlinks: bool = True) -> os.stat_result:
    """stat, and refuse anything but a regular file BEFORE opening it (opening a FIFO blocks)."""
    try:
        st = os.stat(path, follow_symlinks=follow_symlinks)
    except FileNotFoundError:
        raise HashingError(f"{path}: no such file") from None
    except PermissionError:
        raise HashingError(f"{path}: permission denied") from None
    except OSError as exc:
        raise HashingError(f"{path}: cannot stat: {exc.strerror or exc}") from exc
    if stat.S_ISLNK(st.st_mode):
        raise SymlinkRefused(f"{path}: is now a symbolic link; it was a regular file when it was registered")
    if not stat.S_ISREG(st.st_mode):
        raise HashingError(f"{path}: not a regular file ({file_kind(st.st_mode)})")
    return st


def file_kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISREG, "a regular file"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "a special file"


def _open_for_reading(path: str, *, follow_symlinks: bool = True) -> int:
    # O_NONBLOCK: if a FIFO is swapped in after our stat, open must not hang;
    # fstat then tells us it is not the regular file we checked.
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    if not follow_symlinks:
        flags |= os.O_NOFOLLOW  # a link swapped in between our lstat and this open fails with ELOOP
    try:
        return os.open(path, flags)
    except FileNotFoundError:
        raise HashingError(f"{path}: vanished before it could be opened") from None
    except PermissionError:
        raise HashingError(f"{path}: permission denied") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow_symlinks:
            raise SymlinkRefused(f"{path}: is now a symbolic link; it was a regular file when it was registered") from None
        raise HashingError(f"{path}: cannot open: {exc.strerror or exc}") from exc


def _identity(st: os.stat_result) -> FileIdentity:
    return FileIdentity(device=st.st_dev, inode=st.st_ino, size=st.st_size, mtime_ns=st.st_mtime_ns)


def _autov3_start(size: int, head: bytes) -> int | None:
    """Where AutoV3 (kohya's addnet hash) starts: after the 8-byte length and N bytes of header."""
    if size < 8 or len(head) < 8:
        return None
    header_len = int.from_bytes(head[:8], "little")
    if header_len >= AUTOV3_LEGACY_HEADER_LIMIT:
        return 8
    # kohya seeks to 8+N and hashes what is left: nothing if N runs past the end.
    return min(8 + header_len, size)


def _embedded_header_span(size: int, head: bytes) -> tuple[int, int] | None:
    if len(head) < 9 or head[8:9] != b"{":
        return None
    header_len = int.from_bytes(head[:8], "little")
    if not 2 <= header_len <= EMBEDDED_HEADER_LIMIT or 8 + header_len > size:
        return None
    return 8, 8 + header_len


class _WholeSha256:
    def __init__(self) -> None:
        self.hasher = hashlib.sha256()

    def update(self, view: memoryview, offset: int) -> None:
        self.hasher.update(view)


class _SuffixSha256:
    def __init__(self, start: int) -> None:
        self.start = start
        self.hasher = hashlib.sha256()

    def update(self, view: memoryview, offset: int) -> None:
        skip = self.start - offset
        if skip <= 0:
            self.hasher.update(view)
        elif skip < len(view):
            self.hasher.update(view[skip:])


class _Blake3:
    def __init__(self) -> None:
        self.hasher = _blake3_module.blake3(max_threads=BLAKE3_MAX_THREADS)

    def update(self, view: memoryview, offset: int) -> None:
        self.hasher.update(view)


class _ReaderSide:
    """The cheap work done on the reading thread: CRC32 and a few small byte ranges."""

    def __init__(self, size: int, head: bytes) -> None:
        self.crc = 0
        self.head_seen = bytearray()
        self.head_expected = bytes(head[:8])
        self.autov1 = bytearray() if size >= AUTOV1_MIN_SIZE else None
        self.header_span = _embedded_header_span(size, head)
        self.header = bytearray() if self.header_span else None
        self.embedded: tuple[str | None, str | None] = (None, None)

    def update(self, view: memoryview, offset: int) -> None:
        self.crc = _crc32(view, self.crc)
        _collect(self.head_seen, view, offset, 0, len(self.head_expected))
        if self.autov1 is not None:
            _collect(self.autov1, view, offset, AUTOV1_OFFSET, AUTOV1_OFFSET + AUTOV1_LENGTH)
        if self.header is not None and self.header_span is not None:
            lo, hi = self.header_span
            _collect(self.header, view, offset, lo, hi)
            if len(self.header) == hi - lo:
                self.embedded = _parse_embedded(bytes(self.header))
                self.header = None  # parsed: release the memory now


def _collect(target: bytearray, view: memoryview, offset: int, lo: int, hi: int) -> None:
    start, end = max(lo, offset), min(hi, offset + len(view))
    if start < end:
        target += view[start - offset : end - offset]


def _parse_embedded(header: bytes) -> tuple[str | None, str | None]:
    """sshs_* values from a safetensors header; any malformed header just means none."""
    try:
        doc = json.loads(header)
    except (ValueError, RecursionError):
        return None, None
    meta = doc.get("__metadata__") if isinstance(doc, dict) else None
    if not isinstance(meta, dict):
        return None, None
    return embedded_value(meta.get("sshs_model_hash")), embedded_value(meta.get("sshs_legacy_hash"))


class _TestPace:
    """Sleeps so that reading goes no faster than TEST_PACE_ENV bytes per second (test only, see there)."""

    def __init__(self, bytes_per_second: float) -> None:
        self.bytes_per_second = bytes_per_second
        self.started = time.monotonic()

    @classmethod
    def from_env(cls) -> _TestPace | None:
        rate = float(os.environ.get(TEST_PACE_ENV) or 0)
        return cls(rate) if rate > 0 else None

    def wait(self, done: int) -> None:
        delay = self.started + done / self.bytes_per_second - time.monotonic()
        if delay > 0:
            time.sleep(delay)


class _ProgressReporter:
    def __init__(self, callback: Progress | None, total: int) -> None:
        self.callback = callback
        self.total = total
        self.last_call: float | None = None

    def tick(self, done: int) -> None:
        if self.callback is None:
            return
        now = time.monotonic()
        if self.last_call is None or now - self.last_call >= PROGRESS_INTERVAL_S:
            self.last_call = now
            self.callback(done, self.total)

    def finish(self) -> None:
        if self.callback is not None:
            self.callback(self.total, self.total)


def _hash_open_file(
    fd: int, *, size: int, progress: Progress | None, buffer_size: int
) -> tuple[ComputedHashes, int, bool]:
    """One read of fd; returns (hashes, bytes read, whether the first bytes matched our pre-read)."""
    if hasattr(os, "posix_fadvise"):
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        except OSError:
            pass
    # Only 9 bytes are read twice: the AutoV3 hasher must know where the
    # header ends before the first buffer reaches it.
    head = os.pread(fd, 9, 0)
    autov3_start = _autov3_start(size, head)
    whole, b3 = _WholeSha256(), _Blake3()
    suffix = _SuffixSha256(autov3_start) if autov3_start is not None else None
    consumers: list[Any] = [whole, b3] + ([suffix] if suffix else [])
    reader_side = _ReaderSide(size, head)
    reporter = _ProgressReporter(progress, size)
    pace = _TestPace.from_env()
    # Read at most one byte past the expected size: a growing file is then
    # noticed without chasing it forever.
    limit = size + 1
    if size <= min(buffer_size, INLINE_LIMIT):
        bytes_read = _pump_inline(fd, consumers, reader_side, reporter, limit=limit, buffer_size=buffer_size,
                                  pace=pace)
    else:
        bytes_read = _pump_threaded(fd, consumers, reader_side, reporter, limit=limit, buffer_size=buffer_size,
                                    pace=pace)
    reporter.finish()
    autov1 = None
    if reader_side.autov1 is not None and len(reader_side.autov1) == AUTOV1_LENGTH:
        autov1 = hashlib.sha256(reader_side.autov1).hexdigest()[:8]
    hashes = ComputedHashes(
        size=bytes_read,
        sha256=whole.hasher.hexdigest(),
        autov1=autov1,
        autov3_full=suffix.hasher.hexdigest() if suffix else None,
        # Civitai prints the CRC's bytes little-endian first.
        crc32=(reader_side.crc & 0xFFFFFFFF).to_bytes(4, "little").hex(),
        blake3=b3.hasher.hexdigest(),
        embedded_model_hash=reader_side.embedded[0],
        embedded_legacy_hash=reader_side.embedded[1],
    )
    return hashes, bytes_read, bytes(reader_side.head_seen) == reader_side.head_expected


def _pump_inline(
    fd: int, consumers: list[Any], reader_side: _ReaderSide, reporter: _ProgressReporter, *, limit: int, buffer_size: int,
    pace: _TestPace | None = None,
) -> int:
    buffer = mmap.mmap(-1, min(buffer_size, limit))
    view = memoryview(buffer)
    total = 0
    try:
        while total < limit:
            n = os.readv(fd, [view[: min(buffer_size, limit - total)]])
            if n == 0:
                break
            chunk = view[:n]
            reader_side.update(chunk, total)
            for consumer in consumers:
                consumer.update(chunk, total)
            chunk.release()
            total += n
            reporter.tick(total)
            if pace is not None:
                pace.wait(total)
    finally:
        _release([view], [buffer])
    return total


def _pump_threaded(
    fd: int, consumers: list[Any], reader_side: _ReaderSide, reporter: _ProgressReporter, *, limit: int, buffer_size: int,
    pace: _TestPace | None = None,
) -> int:
    """The calling thread reads into a ring of buffers; one thread per hasher consumes each buffer in order."""
    ring = [mmap.mmap(-1, buffer_size) for _ in range(RING_DEPTH)]
    views = [memoryview(m) for m in ring]
    free: queue.SimpleQueue[int] = queue.SimpleQueue()
    for index in range(RING_DEPTH):
        free.put(index)
    users = [0] * RING_DEPTH
    users_lock = threading.Lock()
    inboxes: list[queue.SimpleQueue[tuple[int, int, int] | None]] = [queue.SimpleQueue() for _ in consumers]
    errors: list[BaseException] = []

    def consume(consumer: Any, inbox: queue.SimpleQueue[tuple[int, int, int] | None]) -> None:
        while (item := inbox.get()) is not None:
            index, n, offset = item
            try:
                if not errors:
                    consumer.update(views[index][:n], offset)
            except BaseException as exc:  # noqa: BLE001 - re-raised by the reader below
                errors.append(exc)
            finally:
                with users_lock:
                    users[index] -= 1
                    if users[index] == 0:
                        free.put(index)

    workers = [
        threading.Thread(target=consume, args=(c, box), name=f"hash-{type(c).__name__}", daemon=True)
        for c, box in zip(consumers, inboxes)
    ]
    for worker in workers:
        worker.start()
    total = 0
    try:
        while total < limit and not errors:
            index = free.get()
            n = os.readv(fd, [views[index][: min(buffer_size, limit - total)]])
            if n == 0:
                free.put(index)
                break
            reader_side.update(views[index][:n], total)
            users[index] = len(consumers)  # nobody else holds this buffer yet
            for inbox in inboxes:
                inbox.put((index, n, total))
            total += n
            reporter.tick(total)
            if pace is not None:
                pace.wait(total)
    finally:
        for inbox in inboxes:
            inbox.put(None)
        for worker in workers:
            worker.join()
        _release(views, ring)
    if errors:
        raise errors[0]
    return total


def _release(views: list[memoryview], buffers: list[mmap.mmap]) -> None:
    # A traceback may still hold a slice of a buffer; then the mmap is freed
    # by the garbage collector instead, and the original error must surface.
    for view in views:
        view.release()
    for buffer in buffers:
        try:
            buffer.close()
        except BufferError:
            pass
