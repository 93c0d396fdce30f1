"""Strict safetensors reader: header validation and zero-copy tensor views.

PURE: no Django, no torch. Layout: 8-byte LE u64 N, N bytes of UTF-8 JSON,
then the data buffer. We enforce everything the reference implementation
enforces (header size cap, offsets sorted and contiguous from 0, extent ==
numel * itemsize, 8 + N + buffer == file size) and are stricter where the
reference is lenient, because a file two readers see differently is a way to
fool a scanner: duplicate keys (reference: last wins), unknown per-tensor
fields, non-string metadata, a header that does not start with '{', NaN or
floats where integers belong. Caps on tensor count, name length and rank keep
a hostile header from costing unbounded time or memory.

Sub-byte and other newer dtypes (F4, F6_*, F8_E8M0, ...) are rejected as
unsupported: their byte extents do not follow numel * itemsize.
"""
from __future__ import annotations

import codecs
import json
import math
import mmap
import os
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from workers.modelfiles.types import INCOMPLETE, ModelFileError, Tensor, TruncatedFileError, UnsupportedModelFile

MAX_HEADER_SIZE = 100_000_000  # the reference's limit
# The header is parsed a member at a time from the mapped file (json.loads of a 90 MB header
# holds ~550 MB of Python objects); what stays in memory is one entry per tensor, ~400 bytes
# each. Real files hold < 100K tensors (a whole DeepSeek-V3 in one file), so this cap keeps a
# hostile header under ~80 MB.
MAX_TENSORS = 200_000
MAX_METADATA_ENTRIES = 100_000  # kohya and modelspec write < 200
# Longest single JSON value we parse (e.g. one metadata string; real ones, tag frequencies or a
# base64 thumbnail, are a few MB): it is held about twice while it is parsed.
MAX_JSON_VALUE = 16 << 20
_WINDOW = 1 << 20  # header bytes decoded at a time
MAX_NAME_LENGTH = 4096  # characters; real keys are < 300
MAX_RANK = 8  # 3-D conv weights are rank 5; nothing real goes past 8
MAX_DIM = 2**53  # larger dims cannot describe data that fits a file anyway

# dtype -> (numpy dtype as the fingerprint carries it, bytes per element).
# numpy lacks BF16 and F8: they travel as raw bits of the same width.
NUMPY_DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype("?"),
    "U8": np.dtype("u1"),
    "I8": np.dtype("i1"),
    "F8_E5M2": np.dtype("u1"),
    "F8_E4M3": np.dtype("u1"),
    "I16": np.dtype("<i2"),
    "U16": np.dtype("<u2"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "I32": np.dtype("<i4"),
    "U32": np.dtype("<u4"),
    "F32": np.dtype("<f4"),
    "I64": np.dtype("<i8"),
    "U64": np.dtype("<u8"),
    "F64": np.dtype("<f8"),
    "C64": np.dtype("<c8"),
}
DTYPE_SIZES: dict[str, int] = {name: dt.itemsize for name, dt in NUMPY_DTYPES.items()}
# Kinds the reference has added whose extents are not numel * itemsize: valid, but not read here.
NEWER_DTYPES = frozenset({"F4", "F6_E2M3", "F6_E3M2", "F8_E8M0"})

_TENSOR_FIELDS = frozenset({"dtype", "shape", "data_offsets"})
_METADATA_KEY = "__metadata__"


class SafetensorsError(ModelFileError):
    """The file is not a valid safetensors file under our strict rules."""


class UnsupportedSafetensors(SafetensorsError, UnsupportedModelFile):
    """A valid file with a dtype we do not read (sub-byte and scale kinds)."""


class SafetensorsTruncated(SafetensorsError, TruncatedFileError):
    """The header or the data ends before the header says it should."""


@dataclass(frozen=True, slots=True)
class TensorEntry:
    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int  # offsets relative to the start of the data buffer
    end: int


@dataclass(frozen=True)
class SafetensorsHeader:
    header_size: int  # N, the JSON length
    metadata: dict[str, str]
    tensors: tuple[TensorEntry, ...]  # in data-buffer order
    data_start: int  # 8 + N
    file_size: int


def read_safetensors_header(path: str | os.PathLike) -> SafetensorsHeader:
    """Parse and fully validate the header; reads only 8 + N bytes."""
    mm = _open_mmap(path)
    try:
        return _header_of(mm, keep_metadata=True)
    finally:
        mm.close()


def iter_safetensors_tensors(path: str | os.PathLike) -> Iterator[Tensor]:
    """Yield every tensor, in data-buffer order, as a read-only view into an mmap.

    The header is validated in full before the first tensor is yielded. Pages
    of a tensor the caller has moved past are dropped from this process's
    resident set (MADV_DONTNEED on a read-only shared file mapping only unmaps
    them: a view kept by the caller faults them back in from the page cache),
    so resident memory stays near one tensor however big the file is.
    If another process truncates the file while we read it, the OS raises
    SIGBUS; mmap offers no defence against that.
    """
    mm = _open_mmap(path)
    header = _header_of(mm, keep_metadata=False)
    can_release = hasattr(mm, "madvise") and hasattr(mmap, "MADV_DONTNEED")
    if can_release and hasattr(mmap, "MADV_SEQUENTIAL"):
        mm.madvise(mmap.MADV_SEQUENTIAL)
    page = mmap.PAGESIZE
    released_to = 0  # absolute file offset below which pages were released
    for entry in header.tensors:
        start = header.data_start + entry.begin
        dtype = NUMPY_DTYPES[entry.dtype]
        count = (entry.end - entry.begin) // dtype.itemsize
        array = np.frombuffer(mm, dtype=dtype, count=count, offset=start).reshape(entry.shape)
        yield Tensor(name=entry.name, dtype=entry.dtype, shape=entry.shape, array=array)
        if can_release:
            # Only whole pages that lie entirely before the next tensor.
            end_page = (header.data_start + entry.end) // page * page
            if end_page > released_to:
                mm.madvise(mmap.MADV_DONTNEED, released_to, end_page - released_to)
                released_to = end_page
    # The mmap closes itself once the last view the caller kept is gone.


def _open_mmap(path: str | os.PathLike) -> mmap.mmap:
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < 8:
                raise SafetensorsError(f"file too small for a safetensors header ({size} bytes)")
            return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError as exc:
        raise SafetensorsError(f"cannot map {path}: {exc}") from exc
    except ValueError as exc:  # mmap of a file that became empty
        raise SafetensorsError(f"cannot map {path}: {exc}") from exc


def _header_of(mm, *, keep_metadata: bool) -> SafetensorsHeader:
    header_size = _read_header_size(mm[:8], len(mm))
    return _parse_header(mm, header_size=header_size, file_size=len(mm), keep_metadata=keep_metadata)


def _read_header_size(first8: bytes, file_size: int) -> int:
    if len(first8) < 8:
        raise SafetensorsError(f"file too small for a safetensors header ({file_size} bytes)")
    (header_size,) = struct.unpack("<Q", first8)
    if header_size > MAX_HEADER_SIZE:
        raise SafetensorsError(f"header size {header_size} exceeds the {MAX_HEADER_SIZE} byte limit")
    if header_size < 2:
        raise SafetensorsError(f"header size {header_size} too small for a JSON object")
    if 8 + header_size > file_size:
        raise SafetensorsTruncated(f"truncated: the {header_size}-byte header runs past the end of the file "
                                   f"({file_size} bytes) — {INCOMPLETE}")
    return header_size


def _reject_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            raise SafetensorsError(f"duplicate key in header: {key[:200]!r}")
        result[key] = value
    return result


def _reject_constant(name: str) -> None:
    raise SafetensorsError(f"non-standard JSON constant {name} in header")


_DECODER = json.JSONDecoder(object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant)
_WHITESPACE = re.compile(r"[ \t\n\r]*")  # JSON's whitespace, nothing else


class _HeaderText:
    """The header's JSON text, decoded from the mapped file a window at a time and read one
    value at a time with json's own decoder, so a huge header never exists as one string."""

    def __init__(self, buf, start: int, end: int):
        self.buf, self.pos, self.end = buf, start, end  # bytes [pos, end) not decoded yet
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.text = ""
        self.i = 0  # parse position in self.text

    def more(self) -> bool:
        """Decode more of the header (at least as much again as is pending); False at its end."""
        if self.pos >= self.end:
            return False
        size = max(_WINDOW, len(self.text) - self.i)
        chunk = self.buf[self.pos:min(self.end, self.pos + size)]
        _release_pages(self.buf, self.pos)  # the mapped bytes before this chunk are decoded
        self.pos += len(chunk)
        try:
            new = self.decoder.decode(chunk, final=self.pos >= self.end)
        except UnicodeDecodeError as exc:
            raise SafetensorsError(f"header is not valid UTF-8: {exc.reason}") from exc
        self.text = self.text[self.i:] + new
        self.i = 0
        return True

    def peek(self) -> str:
        """The next character after whitespace ('' at the end of the header)."""
        while True:
            self.i = _WHITESPACE.match(self.text, self.i).end()
            if self.i < len(self.text):
                return self.text[self.i]
            if not self.more():
                return ""

    def expect(self, char: str, what: str) -> None:
        found = self.peek()
        if found != char:
            raise SafetensorsError(f"header is not valid JSON: expected {what}, found "
                                   f"{repr(found) if found else 'the end of the header'}")
        self.i += 1

    def value(self):
        self.peek()
        while True:
            try:
                value, self.i = _DECODER.raw_decode(self.text, self.i)
                return value
            except json.JSONDecodeError as exc:
                if len(self.text) - self.i > MAX_JSON_VALUE:
                    raise SafetensorsError(
                        f"a header value is longer than {MAX_JSON_VALUE} characters, our limit") from exc
                if not self.more():  # complete, and still not JSON
                    raise SafetensorsError(f"header is not valid JSON: {exc.msg}") from exc
            except RecursionError as exc:
                raise SafetensorsError("header is not valid JSON: nested too deep") from exc
            except ValueError as exc:  # int digit limit
                raise SafetensorsError(f"header is not valid JSON: {str(exc)[:200]}") from exc

    def keys(self) -> Iterator[str]:
        """Keys of the object whose '{' was just read; the caller reads each value."""
        if self.peek() == "}":
            self.i += 1
            return
        while True:
            if self.peek() != '"':
                raise SafetensorsError("header is not valid JSON: expected a string key")
            key = self.value()
            self.expect(":", "':' after a key")
            yield key
            found = self.peek()
            self.i += 1
            if found == "}":
                return
            if found != ",":
                raise SafetensorsError("header is not valid JSON: expected ',' or '}' after a value")

    def finish(self) -> None:
        if self.peek():
            raise SafetensorsError("header is not valid JSON: extra data after the object")


def _release_pages(buf, upto: int) -> None:
    """Drop the mapped file pages below `upto` from our resident set (a 100 MB header is
    otherwise resident as a whole after parsing it)."""
    if isinstance(buf, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED"):
        end = upto // mmap.PAGESIZE * mmap.PAGESIZE
        if end > 0:
            buf.madvise(mmap.MADV_DONTNEED, 0, end)


_DTYPE_NAMES = {name: name for name in (*DTYPE_SIZES, *NEWER_DTYPES)}  # one string per dtype for all entries


def _parse_header(buf, *, header_size: int, file_size: int, keep_metadata: bool = True) -> SafetensorsHeader:
    """Validate the header at buf[8:8 + header_size] (buf: the file, mapped)."""
    if buf[8:9] != b"{":
        raise SafetensorsError("header does not start with '{'")
    text = _HeaderText(buf, 8, 8 + header_size)
    text.expect("{", "'{'")
    entries: list[TensorEntry] = []
    metadata: dict[str, str] = {}
    seen_metadata = False
    for key in text.keys():
        if key == _METADATA_KEY:
            if seen_metadata:
                raise SafetensorsError(f"duplicate key in header: {key!r}")
            seen_metadata = True
            metadata = _parse_metadata(text, keep=keep_metadata)
            continue
        if len(entries) >= MAX_TENSORS:
            raise SafetensorsError(f"more than {MAX_TENSORS} tensors, our limit")
        entries.append(_parse_entry(key, text.value()))
    text.finish()
    by_name = sorted(entries, key=lambda e: e.name)
    for a, b in zip(by_name, by_name[1:]):
        if a.name == b.name:
            raise SafetensorsError(f"duplicate key in header: {a.name[:200]!r}")
    del by_name
    # Zero-sized tensors share their offset with a neighbour: sort on both ends.
    entries.sort(key=lambda e: (e.begin, e.end))

    buffer_size = file_size - 8 - header_size
    position = 0
    for entry in entries:
        if entry.begin != position:
            if entry.begin > position:
                raise SafetensorsError(
                    f"hole in the data: no tensor covers bytes {position}-{entry.begin} "
                    f"(tensor {entry.name[:200]!r} starts at {entry.begin})")
            raise SafetensorsError(
                f"tensors overlap: {entry.name[:200]!r} starts at data byte {entry.begin}, inside the "
                f"tensor before it (which ends at {position})")
        position = entry.end
    if position > buffer_size:
        raise SafetensorsTruncated(f"truncated: {buffer_size} of {position} data bytes present — {INCOMPLETE}")
    if position < buffer_size:
        raise SafetensorsError(
            f"{buffer_size - position} bytes of unexpected data after the tensors "
            f"(8 + header {header_size} + data must equal the file size {file_size})")
    newer = next((e for e in entries if e.dtype in NEWER_DTYPES), None)
    if newer is not None:  # only once the layout is known to be sound: a cut-off file says so first
        raise UnsupportedSafetensors(f"tensor {newer.name[:200]!r}: unsupported dtype {newer.dtype} (a newer kind, not read yet)")
    return SafetensorsHeader(
        header_size=header_size, metadata=metadata, tensors=tuple(entries),
        data_start=8 + header_size, file_size=file_size)


def _check_text(text: str, what: str) -> None:
    # json accepts lone surrogate escapes ("\ud800"); serde_json, the reference, does not.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise SafetensorsError(f"{what} is not valid Unicode: {exc.reason}") from exc


def _parse_metadata(text: _HeaderText, *, keep: bool) -> dict[str, str]:
    """The __metadata__ object, a value at a time (values are checked, and kept if `keep`)."""
    if text.peek() == "n":
        if text.value() is not None:
            raise SafetensorsError("__metadata__ is not an object")
        return {}  # the reference (an Option) accepts null
    if text.peek() != "{":
        raise SafetensorsError("__metadata__ is not an object")
    text.i += 1
    metadata: dict[str, str] = {}
    seen: set[str] = set()
    for key in text.keys():
        if key in seen:
            raise SafetensorsError(f"duplicate key in header: {key[:200]!r}")
        if len(seen) >= MAX_METADATA_ENTRIES:
            raise SafetensorsError(f"more than {MAX_METADATA_ENTRIES} __metadata__ entries, our limit")
        seen.add(key)
        item = text.value()
        if not isinstance(item, str):
            raise SafetensorsError(f"__metadata__ value for {key[:200]!r} is not a string")
        _check_text(key, "a __metadata__ key")
        _check_text(item, "a __metadata__ value")
        if keep:
            metadata[key] = item
    return metadata


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse_entry(name: str, info: object) -> TensorEntry:
    if len(name) > MAX_NAME_LENGTH:
        raise SafetensorsError(f"tensor name of {len(name)} characters exceeds the {MAX_NAME_LENGTH} limit")
    _check_text(name, "a tensor name")
    label = repr(name[:200])
    if not isinstance(info, dict):
        raise SafetensorsError(f"tensor {label}: entry is not an object")
    if set(info) != _TENSOR_FIELDS:
        unknown = sorted(set(info) - _TENSOR_FIELDS)
        missing = sorted(_TENSOR_FIELDS - set(info))
        raise SafetensorsError(f"tensor {label}: unknown fields {unknown} / missing fields {missing}")
    dtype = info["dtype"]
    if not isinstance(dtype, str) or dtype not in _DTYPE_NAMES:
        raise SafetensorsError(f"tensor {label}: unsupported dtype {str(dtype)[:50]!r}")
    dtype = _DTYPE_NAMES[dtype]
    shape = info["shape"]
    if not isinstance(shape, list) or not all(_is_int(d) for d in shape):
        raise SafetensorsError(f"tensor {label}: shape is not a list of integers")
    if len(shape) > MAX_RANK:
        raise SafetensorsError(f"tensor {label}: rank {len(shape)} exceeds the {MAX_RANK} limit")
    if any(d < 0 or d > MAX_DIM for d in shape):
        raise SafetensorsError(f"tensor {label}: dimension out of range in shape {shape}")
    offsets = info["data_offsets"]
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets)):
        raise SafetensorsError(f"tensor {label}: data_offsets is not a pair of integers")
    begin, end = offsets
    if begin < 0 or end < begin:
        raise SafetensorsError(f"tensor {label}: bad data_offsets [{begin}, {end}]")
    expected = math.prod(shape) * DTYPE_SIZES[dtype] if dtype in DTYPE_SIZES else end - begin
    if end - begin != expected:
        raise SafetensorsError(
            f"tensor {label}: data extent {end - begin} bytes != {expected} for {dtype} {shape}")
    return TensorEntry(name=name, dtype=dtype, shape=tuple(shape), begin=begin, end=end)


__all__ = [
    "SafetensorsError", "SafetensorsTruncated", "UnsupportedSafetensors", "TensorEntry", "SafetensorsHeader",
    "read_safetensors_header", "iter_safetensors_tensors",
    "NUMPY_DTYPES", "DTYPE_SIZES", "MAX_HEADER_SIZE", "MAX_TENSORS", "MAX_NAME_LENGTH", "MAX_RANK",
]
