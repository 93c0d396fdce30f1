"""Say what a model file is from its bytes, never from its name.

Also holds the small zip central-directory reader shared by the sniffer, the
pickle scanner and the torch reader: torch reads zips by their central
directory (ignoring CRCs and local names), and so must we, because Python's
`zipfile` disagrees with torch on duplicates, flags and CRCs.

PURE: no Django, no torch.
"""
from __future__ import annotations

import ast
import mmap
import os
import pickletools
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workers.modelfiles.types import INCOMPLETE, Format, ModelFileError, TruncatedFileError

HEAD_BYTES = 4096
ZIP_LOCAL_MAGIC = b"PK\x03\x04"
LEGACY_TORCH_MAGIC = b"\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"  # LONG1 of torch's magic number
LEGACY_TORCH_MAGIC_TEXT = b"L119547037146038801333356"  # the same number as a protocol-0/1 LONG
NPY_MAGIC = b"\x93NUMPY"
SEVEN_ZIP_MAGIC = b"7z\xbc\xaf\x27\x1c"
GGUF_MAGIC = b"GGUF"
MAX_ZIP_ENTRIES = 1_000_000
MAX_NPY_HEADER = 1 << 20
_INFLATE_STEP = 1 << 20  # compressed bytes read, and inflated bytes made, per step
HIGHEST_PICKLE_PROTOCOL = 5


def sniff(path: str | os.PathLike) -> Format:
    """Return the format of `path` by content. Raises ModelFileError only if unreadable."""
    p = Path(path)
    try:
        if p.is_dir():
            return "diffusers" if (p / "model_index.json").is_file() else "unknown"
        with open(p, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(HEAD_BYTES)
            if head.startswith(ZIP_LOCAL_MAGIC):
                with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                    return _zip_kind(mm)
    except OSError as exc:
        raise ModelFileError(f"cannot read {p}: {exc}") from exc
    return sniff_head(head, size=size)


def sniff_mapped(buf) -> Format:
    """The format of a file already mapped (or read) as `buf`: the bytes a caller holds open,
    not whatever a path names by now (the converter reads, scans and checks one open file)."""
    head = bytes(buf[:HEAD_BYTES])
    if head.startswith(ZIP_LOCAL_MAGIC):
        return _zip_kind(buf)
    return sniff_head(head, size=len(buf))


def sniff_head(head: bytes, *, size: int) -> Format:
    """Classify from the first bytes of a file of `size` bytes (zips need `sniff`)."""
    if len(head) < 2:
        return "unknown"
    if head.startswith(ZIP_LOCAL_MAGIC):
        return "zip"
    if head.startswith(SEVEN_ZIP_MAGIC):
        return "7z"
    if head.startswith(GGUF_MAGIC):
        return "gguf"
    if head.startswith(NPY_MAGIC):
        return "npy"
    if head[257:262] == b"ustar":
        return "torch-tar"
    if _is_legacy_torch(head):
        return "torch-legacy"
    if len(head) >= 10 and head[8:9] == b"{":
        header_len = struct.unpack_from("<Q", head)[0]
        if 2 <= header_len <= size - 8:
            return "safetensors"
    if looks_like_pickle(head):
        return "pickle"
    return "unknown"


def describe_unknown(head: bytes, *, size: int) -> str:
    """Why a file of `size` bytes starting with `head` is no format we read, in words (never a bytes repr)."""
    if len(head) >= 9 and head[8:9] == b"{":
        header_len = struct.unpack_from("<Q", head)[0]
        if header_len > size - 8:  # a safetensors file whose header was cut off
            return (f"truncated: a safetensors file whose {header_len:,}-byte header runs past the end of the file "
                    f"({size:,} bytes) — {INCOMPLETE}")
    first = " ".join(f"{b:02x}" for b in head[:8])
    if size < 64:
        return f"only {size} bytes: too short to be a model file (they begin {first})"
    return f"not a model format we can analyse (it starts with the bytes {first})"


def looks_like_pickle(head: bytes) -> bool:
    """True if `head` starts a pickle: a PROTO opcode, or opcodes that decode cleanly.

    Protocol 0/1 pickles have no header, so we decode a bounded prefix and accept it
    if it reaches STOP or decodes many opcodes before the prefix runs out.
    """
    if len(head) < 2:
        return False
    if head[0] == 0x80:
        return head[1] <= HIGHEST_PICKLE_PROTOCOL
    ops = 0
    try:
        for opcode, _arg, _pos in pickletools.genops(head[:HEAD_BYTES]):
            ops += 1
            if opcode.name == "STOP":
                return ops >= 2
    except Exception:  # noqa: BLE001 - a heuristic over a bounded in-memory prefix
        pass
    return ops >= 8 and len(head) >= HEAD_BYTES


def _is_legacy_torch(head: bytes) -> bool:
    if head.startswith(LEGACY_TORCH_MAGIC_TEXT):
        return True
    if head[:1] != b"\x80":
        return False
    rest = head[2:]
    if rest[:1] == b"\x95":  # FRAME, protocol >= 4
        rest = rest[9:]
    return rest.startswith(LEGACY_TORCH_MAGIC)


def _zip_kind(buf) -> Format:
    try:
        names = [e.name for e in read_zip_directory(buf)]
    except ModelFileError:
        return "zip"
    if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
        return "torch-zip"
    if names and all(n.endswith(".npy") for n in names):
        return "npz"
    return "zip"


# --- zip central directory -------------------------------------------------

@dataclass(frozen=True)
class ZipEntry:
    name: str            # utf-8 with surrogateescape: equal names <=> equal bytes
    flags: int
    method: int          # 0 stored, 8 deflated
    crc32: int
    compressed_size: int
    size: int
    header_offset: int   # of the local file header
    index: int           # position in the central directory


@dataclass(frozen=True)
class ZipLocal:
    name: str            # as the local header spells it
    data_offset: int     # first byte of the entry's (possibly compressed) data


_EOCD = struct.Struct("<4s4H2LH")
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")
_CENTRAL = struct.Struct("<4s6H3L5H2L")
_LOCAL = struct.Struct("<4s5H3L2H")


def read_zip_directory(buf) -> list[ZipEntry]:
    """Entries of the zip in `buf` (bytes or mmap), in central-directory order."""
    size = len(buf)
    search_from = max(0, size - (_EOCD.size + 0xFFFF))
    eocd_at = buf.rfind(b"PK\x05\x06", search_from)
    if eocd_at < 0 or eocd_at + _EOCD.size > size:
        raise TruncatedFileError(f"truncated zip: the directory at the end of the file is missing — {INCOMPLETE}")
    _sig, _disk, _cd_disk, _n_here, count, cd_size, cd_offset, _clen = _EOCD.unpack_from(buf, eocd_at)
    if count == 0xFFFF or cd_size == 0xFFFFFFFF or cd_offset == 0xFFFFFFFF:
        count, cd_size, cd_offset = _zip64_directory(buf, eocd_at)
    if count > MAX_ZIP_ENTRIES:
        raise ModelFileError(f"zip: {count} entries is more than we read")
    if cd_offset + cd_size > size:
        raise ModelFileError("zip: central directory lies outside the file")
    entries = []
    pos = cd_offset
    for index in range(count):
        if pos + _CENTRAL.size > size:
            raise TruncatedFileError(f"truncated zip: the directory at the end of the file is cut short — {INCOMPLETE}")
        (sig, _made, _needed, flags, method, _time, _date, crc, csize, usize,
         name_len, extra_len, comment_len, _disk_start, _iattr, _eattr, offset) = _CENTRAL.unpack_from(buf, pos)
        if sig != b"PK\x01\x02":
            raise ModelFileError(f"zip: bad central directory entry at {pos}")
        name_at = pos + _CENTRAL.size
        name = bytes(buf[name_at:name_at + name_len]).decode("utf-8", "surrogateescape")
        extra = bytes(buf[name_at + name_len:name_at + name_len + extra_len])
        usize, csize, offset = _apply_zip64_extra(extra, usize, csize, offset)
        if offset + _LOCAL.size > size or offset + csize > size:
            raise ModelFileError(f"zip: entry {name!r} lies outside the file")
        entries.append(ZipEntry(name, flags, method, crc, csize, usize, offset, index))
        pos = name_at + name_len + extra_len + comment_len
    return entries


def read_zip_local(buf, entry: ZipEntry) -> ZipLocal:
    """The local header of `entry`: its own name and where the data starts."""
    if buf[entry.header_offset:entry.header_offset + 4] != ZIP_LOCAL_MAGIC:
        raise ModelFileError(f"zip: no local header for {entry.name!r} at {entry.header_offset}")
    fields = _LOCAL.unpack_from(buf, entry.header_offset)
    name_len, extra_len = fields[9], fields[10]
    name_at = entry.header_offset + _LOCAL.size
    name = bytes(buf[name_at:name_at + name_len]).decode("utf-8", "surrogateescape")
    data_offset = name_at + name_len + extra_len
    if data_offset + entry.compressed_size > len(buf):
        raise ModelFileError(f"zip: data of {entry.name!r} runs past the end of the file")
    return ZipLocal(name, data_offset)


def read_zip_entry(buf, entry: ZipEntry, data_offset: int, *, limit: int) -> bytes | bytearray:
    """Up to `limit` bytes of the entry's content (inflated if deflated).

    Inflates a chunk at a time and never past `limit` (whatever the headers declare), into
    one growing buffer that is returned as it is: asking for `limit + 1` bytes tells a
    caller that an entry is larger than it wants, at the cost of `limit` bytes of memory.
    """
    raw_end = data_offset + entry.compressed_size
    if entry.method == 0:
        return bytes(buf[data_offset:min(raw_end, data_offset + limit)])
    inflater = zlib.decompressobj(-15)
    out = bytearray()
    pos = data_offset
    try:
        while pos < raw_end and len(out) < limit and not inflater.eof:
            data = buf[pos:min(raw_end, pos + _INFLATE_STEP)]
            pos += len(data)
            # A step of output at a time: 1 MiB of a bomb inflates to 1 GiB, and one call returning
            # all of it would briefly hold it twice (as bytes, then in `out`).
            while data and len(out) < limit:
                out += inflater.decompress(data, min(_INFLATE_STEP, limit - len(out)))
                data = inflater.unconsumed_tail
    except zlib.error as exc:
        raise ModelFileError(f"zip entry {entry.name!r} does not inflate: {exc}") from exc
    return out


def _zip64_directory(buf, eocd_at: int) -> tuple[int, int, int]:
    loc_at = eocd_at - _ZIP64_LOCATOR.size
    if loc_at < 0 or buf[loc_at:loc_at + 4] != b"PK\x06\x07":
        raise ModelFileError("zip: zip64 sizes without a zip64 locator")
    _sig, _disk, eocd64_at, _disks = _ZIP64_LOCATOR.unpack_from(buf, loc_at)
    if eocd64_at + _ZIP64_EOCD.size > len(buf) or buf[eocd64_at:eocd64_at + 4] != b"PK\x06\x06":
        raise ModelFileError("zip: bad zip64 end-of-central-directory record")
    fields = _ZIP64_EOCD.unpack_from(buf, eocd64_at)
    return fields[7], fields[8], fields[9]


def _apply_zip64_extra(extra: bytes, usize: int, csize: int, offset: int) -> tuple[int, int, int]:
    pos = 0
    while pos + 4 <= len(extra):
        tag, length = struct.unpack_from("<HH", extra, pos)
        body = extra[pos + 4:pos + 4 + length]
        if tag == 0x0001:
            values = list(struct.unpack_from(f"<{len(body) // 8}Q", body))
            if usize == 0xFFFFFFFF and values:
                usize = values.pop(0)
            if csize == 0xFFFFFFFF and values:
                csize = values.pop(0)
            if offset == 0xFFFFFFFF and values:
                offset = values.pop(0)
        pos += 4 + length
    return usize, csize, offset


# --- .npy header --------------------------------------------------------------

@dataclass(frozen=True)
class NpyHeader:
    descr: object                # as written: a dtype string, or a list for structured dtypes
    dtype: np.dtype              # built from `descr` (inert); `hasobject` means a pickle follows
    fortran_order: bool
    shape: tuple[int, ...]
    data_offset: int             # absolute offset of the array bytes in the buffer


def read_npy_header(buf, *, start: int = 0, end: int | None = None) -> NpyHeader:
    """Parse a .npy header with ast.literal_eval (never numpy's loader)."""
    end = len(buf) if end is None else end
    if bytes(buf[start:start + 6]) != NPY_MAGIC or start + 10 > end:
        raise ModelFileError("npy: missing magic")
    major = buf[start + 6]
    if major == 1:
        header_len, header_at = struct.unpack_from("<H", buf, start + 8)[0], start + 10
    elif major in (2, 3):
        if start + 12 > end:
            raise ModelFileError("npy: truncated header")
        header_len, header_at = struct.unpack_from("<I", buf, start + 8)[0], start + 12
    else:
        raise ModelFileError(f"npy: unknown version {major}")
    if header_len > MAX_NPY_HEADER or header_at + header_len > end:
        raise ModelFileError("npy: header runs past the data")
    text = bytes(buf[header_at:header_at + header_len]).decode("utf-8" if major == 3 else "latin-1", "replace")
    try:
        header = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
        raise ModelFileError(f"npy: header is not a literal: {exc}") from exc
    if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
        raise ModelFileError("npy: header must have exactly descr, fortran_order and shape")
    shape = header["shape"]
    if (not isinstance(shape, tuple) or len(shape) > 64
            or not all(type(n) is int and n >= 0 for n in shape)):
        raise ModelFileError(f"npy: bad shape {shape!r}")
    if not isinstance(header["fortran_order"], bool):
        raise ModelFileError("npy: fortran_order must be a bool")
    try:
        dtype = np.dtype(header["descr"])
    except (TypeError, ValueError, SyntaxError, RecursionError) as exc:  # numpy parses "a,b" descrs as code
        raise ModelFileError(f"npy: bad descr {header['descr']!r}") from exc
    return NpyHeader(header["descr"], dtype, header["fortran_order"], shape, header_at + header_len)
