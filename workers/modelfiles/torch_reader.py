"""Read tensors out of torch checkpoints and numpy files without torch or pickle.

`iter_torch_tensors(path)` scans the file first and refuses dangerous or
unreadable ones; then it interprets the object pickle with the restricted
reader and reads each storage view straight from an mmap, one tensor at a time.
Zip checkpoints follow torch's own rules (central directory, first entry of a
name, prefix of the first entry, data at local header + its length) but
stricter: duplicates, foreign prefixes, odd flags and compression are refused.

PURE: no Django, no torch.
"""
from __future__ import annotations

import math
import mmap
import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import as_strided

from workers.modelfiles.pickle_scan import scan_path
from workers.modelfiles.restricted_pickle import (
    NdarrayBuilder, Opaque, OpaqueClass, StorageRef, TensorRef, load_restricted, short_repr,
)
from workers.modelfiles.sniff import (
    ZipEntry, read_npy_header, read_zip_directory, read_zip_entry, read_zip_local, sniff,
)
from workers.modelfiles.types import INCOMPLETE, ModelFileError, Tensor, TruncatedFileError, UnsupportedModelFile

ELEMENT_SIZE = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2,
                "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8, "C64": 8}
# numpy kinds lack BF16 and F8: carried as raw bits of the same width
NUMPY_DTYPE = {"BOOL": "?", "U8": "u1", "I8": "i1", "F8_E5M2": "u1", "F8_E4M3": "u1", "I16": "i2",
               "U16": "u2", "F16": "f2", "BF16": "u2", "I32": "i4", "U32": "u4", "F32": "f4",
               "I64": "i8", "U64": "u8", "F64": "f8", "C64": "c8"}
_FROM_NUMPY = {np.dtype(code).newbyteorder("<").str: name for name, code in NUMPY_DTYPE.items()
               if name not in ("BF16", "F8_E5M2", "F8_E4M3")}
LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001
MAX_TENSORS = 1_000_000
MAX_NESTING = 200
MAX_NODES = 1_000_000
MAX_KEY_CHARS = 256  # containers and tensors visited, shared ones counted each time
MAX_NPZ_INFLATE = 1 << 30  # largest compressed .npz array we inflate to fingerprint it
_LEAVES = (str, bytes, int, float, complex, type(None), np.generic)
_ZIP_FLAGS_WE_READ = 0x0008 | 0x0800  # data descriptor, utf-8 names


def iter_torch_tensors(path: str | os.PathLike) -> Iterator[Tensor]:
    """Yield every tensor of a torch-zip, torch-legacy, .npy or .npz file, by dotted name.

    Raises ModelFileError if the scan verdict is dangerous or unreadable, or the
    file is malformed; a bare pickle yields only the numpy arrays it embeds.
    """
    p = Path(path)
    report = scan_path(p)
    if report.verdict in ("dangerous", "unreadable"):
        first = next((f for f in report.findings if f.severity == report.verdict), None)
        reason = f": {first.what} at {first.where} ({first.why})" if first else ""
        raise ModelFileError(f"refusing {p.name}: scan verdict {report.verdict}{reason}")
    fmt = sniff(p)
    try:
        with open(p, "rb") as f:
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"cannot read {p}: {exc}") from exc
    try:
        yield from _tensors_by_format(buf, fmt, p.name)
    finally:
        try:
            buf.close()
        except BufferError:  # a numpy view still alive after an error: the GC closes it later
            pass


def _tensors_by_format(buf, fmt: str, name: str) -> Iterator[Tensor]:
    if fmt == "torch-zip":
        yield from _zip_tensors(buf)
    elif fmt == "torch-legacy":
        yield from _legacy_tensors(buf)
    elif fmt == "pickle":
        value, _ = load_restricted(buf, persistent_load=_no_storages)
        yield from _arrays_only(value)
    elif fmt == "npy":
        yield _npy_tensor(buf, 0, len(buf), "")
    elif fmt == "npz":
        yield from _npz_tensors(buf)
    else:
        raise ModelFileError(f"{name}: {fmt} files are not read by the torch reader")


# --- zip checkpoints ---------------------------------------------------------------

@dataclass(frozen=True)
class Checkpoint:
    """A torch-zip or torch-legacy checkpoint as read so far: its object graph (inert stand-ins:
    TensorRef views of StorageRefs) and where each storage's bytes lie. No tensor data is read yet,
    so a caller (the converter) can plan, then read each tensor when it wants it."""
    value: object
    big_endian: bool
    locate: Callable[[StorageRef], tuple[int, int]]  # storage -> (file offset, bytes the file holds for it)


def read_checkpoint(buf, fmt: str) -> Checkpoint:
    """The object graph and storage locations of a torch-zip or torch-legacy file mapped in `buf`.
    The caller has scanned the file (a dangerous one must never get here)."""
    if fmt == "torch-zip":
        return _zip_checkpoint(buf)
    if fmt == "torch-legacy":
        return _legacy_checkpoint(buf)
    raise ModelFileError(f"{fmt} is not a torch checkpoint with storages")


def _zip_tensors(buf) -> Iterator[Tensor]:
    ckpt = _zip_checkpoint(buf)
    yield from _tensors_of(ckpt.value, buf, ckpt.locate, big_endian=ckpt.big_endian)


def _zip_checkpoint(buf) -> Checkpoint:
    entries = read_zip_directory(buf)
    if not entries or "/" not in entries[0].name:
        raise ModelFileError("torch zip: first entry has no archive prefix")
    prefix = entries[0].name.split("/", 1)[0]
    by_name: dict[str, ZipEntry] = {}
    for entry in entries:
        if entry.name in by_name:
            raise ModelFileError(f"torch zip: duplicate entry {entry.name!r}")
        if not entry.name.startswith(prefix + "/"):
            raise ModelFileError(f"torch zip: entry {entry.name!r} outside the {prefix!r} prefix")
        if entry.flags & ~_ZIP_FLAGS_WE_READ:
            raise ModelFileError(f"torch zip: entry {entry.name!r} is encrypted or flagged")
        if entry.method != 0:  # torch writes stored entries; a re-zipped checkpoint is valid but not read here
            raise UnsupportedModelFile(f"torch zip: entry {entry.name!r} is compressed, which we do not read")
        by_name[entry.name] = entry
    big_endian = _zip_text(buf, by_name, f"{prefix}/byteorder", default="little") == "big"
    pickle_start, pickle_size = _zip_data(buf, by_name, f"{prefix}/data.pkl")
    value, _ = load_restricted(buf, start=pickle_start, end=pickle_start + pickle_size)

    def storage_bytes(storage: StorageRef) -> tuple[int, int]:
        return _zip_data(buf, by_name, f"{prefix}/data/{storage.key}")

    return Checkpoint(value=value, big_endian=big_endian, locate=storage_bytes)


def _zip_data(buf, by_name: dict[str, ZipEntry], name: str) -> tuple[int, int]:
    entry = by_name.get(name)
    if entry is None:
        raise ModelFileError(f"torch zip: missing entry {name!r}")
    local = read_zip_local(buf, entry)
    if local.name != entry.name:
        raise ModelFileError(f"torch zip: local header of {name!r} names {local.name!r}")
    return local.data_offset, entry.size


def _zip_text(buf, by_name, name: str, *, default: str) -> str:
    if name not in by_name:
        return default
    start, size = _zip_data(buf, by_name, name)
    return bytes(buf[start:start + min(size, 64)]).decode("ascii", "replace").strip()


# --- legacy checkpoints ------------------------------------------------------------

def _legacy_tensors(buf) -> Iterator[Tensor]:
    ckpt = _legacy_checkpoint(buf)
    yield from _tensors_of(ckpt.value, buf, ckpt.locate, big_endian=ckpt.big_endian)


def _legacy_checkpoint(buf) -> Checkpoint:
    magic, pos = load_restricted(buf, start=0)
    if magic != LEGACY_MAGIC_NUMBER:
        raise ModelFileError("legacy torch: bad magic number")
    protocol, pos = load_restricted(buf, start=pos)
    if protocol != LEGACY_PROTOCOL_VERSION:
        raise ModelFileError(f"legacy torch: unknown protocol version {short_repr(protocol)}")
    sys_info, pos = load_restricted(buf, start=pos)
    if not isinstance(sys_info, dict):
        raise ModelFileError("legacy torch: sys_info is not a dict")
    big_endian = sys_info.get("little_endian", True) is False
    value, pos = load_restricted(buf, start=pos)
    keys, pos = load_restricted(buf, start=pos)
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise ModelFileError("legacy torch: storage key list is not a list of strings")

    storages = {ref.storage.key: ref.storage for _name, ref in _flatten(value) if isinstance(ref, TensorRef)}
    located: dict[str, tuple[int, int]] = {}
    for key in keys:  # raw storages follow in key order: int64 element count, then bytes
        storage = storages.get(key)
        if storage is None or key in located:
            raise ModelFileError(f"legacy torch: storage key {key!r} is unknown or repeated")
        if pos + 8 > len(buf):
            raise TruncatedFileError(f"truncated: the file ends before storage {key!r} — {INCOMPLETE}")
        numel = struct.unpack_from(">q" if big_endian else "<q", buf, pos)[0]
        if numel != storage.numel:
            raise ModelFileError(f"legacy torch: storage {key!r} holds {numel} elements, not {storage.numel}")
        nbytes = numel * ELEMENT_SIZE[storage.dtype]
        located[key] = (pos + 8, nbytes)
        pos += 8 + nbytes
    if pos > len(buf):
        raise TruncatedFileError(f"truncated: the tensor data needs {pos:,} bytes, the file has {len(buf):,} — {INCOMPLETE}")

    def storage_bytes(storage: StorageRef) -> tuple[int, int]:
        if storage.key not in located:
            raise ModelFileError(f"legacy torch: storage {storage.key!r} is not in the key list")
        return located[storage.key]

    return Checkpoint(value=value, big_endian=big_endian, locate=storage_bytes)


def _no_storages(pid):
    raise ModelFileError("a bare pickle has no storages to load")


# --- from the object graph to tensors ------------------------------------------------

def _tensors_of(value, buf, storage_bytes, *, big_endian: bool) -> Iterator[Tensor]:
    first_seen: dict[str, StorageRef] = {}
    for count, (name, item) in enumerate(_flatten(value)):
        if count >= MAX_TENSORS:
            raise ModelFileError(f"more than {MAX_TENSORS} tensors")
        if isinstance(item, np.ndarray):
            yield _numpy_tensor(name, item)
            continue
        storage = first_seen.setdefault(item.storage.key, item.storage)
        if storage != item.storage:
            raise ModelFileError(f"storage {storage.key!r} is declared twice with different types or sizes")
        start, available = storage_bytes(storage)
        yield _view(buf, name, item, start=start, available=available, big_endian=big_endian)


def flatten_tensors(value, prefix: str = ""):
    """(dotted name, TensorRef or numeric ndarray) of every tensor under `value`, named as
    iter_torch_tensors names them (the fingerprint sees these names)."""
    yield from _walk(value, prefix, 0, set(), [MAX_NODES])


def numpy_dtype_name(dtype: np.dtype) -> str | None:
    """The safetensors name of a plain numeric numpy dtype (either byte order), None for others."""
    if dtype.fields or dtype.hasobject:
        return None
    return _FROM_NUMPY.get(dtype.newbyteorder("<").str)


def read_npy(buf, start: int, end: int, name: str) -> Tensor:
    """The .npy array in buf[start:end] as a contiguous little-endian Tensor (a copy)."""
    return _npy_tensor(buf, start, end, name)


def _flatten(value):
    """(dotted name, TensorRef or numeric ndarray) in order; lists by index.

    Shared references are followed each time (tied weights keep both names), so a
    budget stops memo-built graphs that double at every level.
    """
    yield from _walk(value, "", 0, set(), [MAX_NODES])


def _walk(value, prefix: str, depth: int, on_path: set, budget: list):
    if isinstance(value, _LEAVES):
        return
    budget[0] -= 1
    if budget[0] < 0:
        raise ModelFileError(f"object graph has more than {MAX_NODES} containers and tensors")
    if isinstance(value, TensorRef):
        yield prefix, value
        return
    if isinstance(value, NdarrayBuilder):
        value = value.array
    if isinstance(value, np.ndarray):
        if value.dtype.newbyteorder("<").str in _FROM_NUMPY:
            yield prefix, value
        return
    if depth > MAX_NESTING or id(value) in on_path:
        raise ModelFileError("object graph nested too deep or cyclic")
    children: list = []
    if isinstance(value, dict):
        children = [(_key_name(k), v) for k, v in value.items()]
    elif isinstance(value, (list, tuple)):
        children = [(str(i), v) for i, v in enumerate(value)]
    elif isinstance(value, Opaque):
        state = value.state
        children = (list(state.items()) if isinstance(state, dict) else [("state", state)]) \
            + [(_key_name(k), v) for k, v in value.items.items()] \
            + [(str(i), v) for i, v in enumerate(value.list)] \
            + [(f"args.{i}", v) for i, v in enumerate(value.args)]
    on_path.add(id(value))
    for key, child in children:
        yield from _walk(child, f"{prefix}.{key}" if prefix else str(key), depth + 1, on_path, budget)
    on_path.discard(id(value))


def _key_name(key) -> str:
    """Names are informative only; long keys are cut so names stay small."""
    if isinstance(key, (str, int, OpaqueClass)):
        text = str(key) if not isinstance(key, int) or key.bit_length() < 256 else "<int>"
        return text if len(text) <= MAX_KEY_CHARS else text[:MAX_KEY_CHARS] + "..."
    return type(key).__name__


@dataclass(frozen=True)
class ViewSpan:
    """Where a storage view's elements lie: `begin` is the file offset of its first element."""
    begin: int
    count: int       # elements in the view
    item: int        # bytes per element
    extent: int      # elements from the first to the last one the view reaches, in storage order
    contiguous: bool  # C-contiguous: its bytes are file[begin:begin + count * item] in order


def view_span(name: str, ref: TensorRef, *, start: int, available: int, file_size: int) -> ViewSpan:
    """Bounds-check the view `ref` of a storage whose bytes start at `start` (`available` of them in
    the file), with Python ints; raise ModelFileError if it reaches outside its storage."""
    storage = ref.storage
    item = ELEMENT_SIZE.get(ref.dtype)
    if item is None:
        raise ModelFileError(f"{name}: unsupported dtype {ref.dtype}")
    storage_bytes = storage.numel * ELEMENT_SIZE[storage.dtype]
    if storage_bytes > available:
        raise ModelFileError(f"{name}: storage {storage.key!r} declares {storage_bytes} bytes, file holds {available}")
    size, stride, offset = ref.size, ref.stride, ref.offset
    if len(size) != len(stride) or offset < 0 or any(n < 0 for n in size) or any(s < 0 for s in stride):
        raise ModelFileError(f"{name}: negative or mismatched size, stride or offset")
    count = math.prod(size)
    if count == 0:
        return ViewSpan(begin=start, count=0, item=item, extent=0, contiguous=True)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if (last + 1) * item > storage_bytes:
        raise ModelFileError(f"{name}: view reaches past its storage")
    if count * item > max(file_size, 1 << 20):
        raise ModelFileError(f"{name}: view is larger than the file (overlapping strides)")
    # C order: each dimension of more than one element steps over all the later ones.
    expected, contiguous = 1, True
    for n, s in zip(reversed(size), reversed(stride)):
        if n != 1 and s != expected:
            contiguous = False
        expected *= n
    return ViewSpan(begin=start + offset * item, count=count, item=item, extent=last - offset + 1,
                    contiguous=contiguous)


def read_view(buf, name: str, ref: TensorRef, *, start: int, available: int, big_endian: bool) -> Tensor:
    """Copy the (possibly strided) view `ref` of a storage into a contiguous little-endian array."""
    return _view(buf, name, ref, start=start, available=available, big_endian=big_endian)


def _view(buf, name: str, ref: TensorRef, *, start: int, available: int, big_endian: bool) -> Tensor:
    span = view_span(name, ref, start=start, available=available, file_size=len(buf))
    size, stride = ref.size, ref.stride
    item = span.item
    dtype = np.dtype(NUMPY_DTYPE[ref.dtype]).newbyteorder(">" if big_endian else "<")
    if span.count == 0:
        return Tensor(name, ref.dtype, tuple(size), np.zeros(size, dtype=dtype.newbyteorder("<")))
    base = np.frombuffer(buf, dtype=dtype, count=span.extent, offset=span.begin)
    view = as_strided(base, shape=size, strides=[s * item for s in stride], writeable=False)
    array = np.array(view, dtype=dtype.newbyteorder("<"), order="C", copy=True)
    del base, view  # release the mmap export before the file closes
    _release_pages(buf, span.begin, span.extent * item)
    return Tensor(name, ref.dtype, tuple(size), array)


def _release_pages(buf, begin: int, length: int) -> None:
    """Drop the file pages just copied, so resident memory stays near one tensor on multi-GB files.
    Safe for a read-only file mapping: a later access (a view sharing the storage) faults them back in."""
    if not isinstance(buf, mmap.mmap) or not hasattr(mmap, "MADV_DONTNEED"):
        return
    lo = begin // mmap.PAGESIZE * mmap.PAGESIZE
    hi = min(begin + length, len(buf))
    if hi > lo:
        buf.madvise(mmap.MADV_DONTNEED, lo, hi - lo)


def _numpy_tensor(name: str, array: np.ndarray) -> Tensor:
    little = array.astype(array.dtype.newbyteorder("<"), copy=False)
    return Tensor(name, _FROM_NUMPY[little.dtype.str], tuple(array.shape), np.ascontiguousarray(little))


def _arrays_only(value) -> Iterator[Tensor]:
    for name, item in _flatten(value):
        if isinstance(item, TensorRef):
            raise ModelFileError("a bare pickle refers to tensor storages it does not contain")
        yield _numpy_tensor(name, item)


# --- numpy files ---------------------------------------------------------------------

def _npy_tensor(buf, start: int, end: int, name: str) -> Tensor:
    header = read_npy_header(buf, start=start, end=end)
    dtype = header.dtype
    if dtype.newbyteorder("<").str not in _FROM_NUMPY or dtype.fields:
        raise ModelFileError(f"npy {name!r}: dtype {header.descr!r} is not a plain numeric type")
    count = math.prod(header.shape)
    if header.data_offset + count * dtype.itemsize > end:
        raise ModelFileError(f"npy {name!r}: data shorter than its shape")
    flat = np.frombuffer(buf, dtype=dtype, count=count, offset=header.data_offset)
    shaped = flat.reshape(header.shape, order="F" if header.fortran_order else "C")
    array = np.array(shaped, dtype=dtype.newbyteorder("<"), order="C", copy=True)
    del flat, shaped
    return Tensor(name, _FROM_NUMPY[array.dtype.str], header.shape, array)


def _npz_tensors(buf) -> Iterator[Tensor]:
    seen: set[str] = set()
    for entry in read_zip_directory(buf):
        if entry.name in seen:
            raise ModelFileError(f"npz: duplicate entry {entry.name!r}")
        seen.add(entry.name)
        local = read_zip_local(buf, entry)
        name = entry.name.removesuffix(".npy")
        if entry.method == 0:
            yield _npy_tensor(buf, local.data_offset, local.data_offset + entry.compressed_size, name)
        elif entry.method == 8:
            # The array has to be in memory to be fingerprinted: inflate what the entry declares,
            # and never more (a lying header stops there instead of inflating a bomb).
            if entry.size > MAX_NPZ_INFLATE:
                raise ModelFileError(f"npz: array {name!r} declares {entry.size} bytes, more than the "
                                     f"{MAX_NPZ_INFLATE} we inflate")
            data = read_zip_entry(buf, entry, local.data_offset, limit=entry.size + 1)
            if len(data) != entry.size:
                raise ModelFileError(f"npz: array {name!r} inflates to a size other than the "
                                     f"{entry.size} bytes its header declares")
            yield _npy_tensor(data, 0, len(data), name)
        else:
            raise ModelFileError(f"npz: entry {entry.name!r} uses compression method {entry.method}")
