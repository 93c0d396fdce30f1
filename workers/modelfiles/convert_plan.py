"""What a conversion to safetensors will write, decided from a checkpoint's object graph.

PURE: no Django, no torch. The graph is the restricted reader's (inert stand-ins: storage views,
numpy arrays, plain values, `Opaque` records of unknown classes); nothing here reads tensor data.

Rules, in the order a person reading a converted file would ask about them:
- Weights: a Lightning-style `{"state_dict": {...}, "epoch": ..., "optimizer_states": ...}` is
  unwrapped (the tensors are the state_dict's, named without "state_dict.": what loaders expect of
  a .safetensors file); anything else is taken whole. Nested dicts are joined with "." and lists
  by index, as the torch reader names tensors.
- Plain values (text, numbers, booleans, None, numpy scalars, flat lists of them) anywhere become
  `__metadata__` strings under their dotted names: text as it is, the rest as JSON ("1234",
  "true", "null", "[0.9, 0.999]"), with format=pt beside them. Everything else (objects of
  unknown classes, bytes, sets, ...) is dropped and listed, and so are tensors beside the
  state_dict (optimizer state, callbacks): training state, not weights.
- Refused rather than guessed: two tensors that would get one name, names the strict reader would
  refuse, a checkpoint with no tensor to write.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from workers.modelfiles.fingerprint import is_ignored_key
from workers.modelfiles.restricted_pickle import NdarrayBuilder, Opaque, OpaqueClass, StorageRef, TensorRef
from workers.modelfiles.safetensors_reader import MAX_NAME_LENGTH, MAX_RANK, MAX_TENSORS
from workers.modelfiles.sniff import read_npy_header, read_zip_directory, read_zip_entry, read_zip_local
from workers.modelfiles.torch_reader import (
    ELEMENT_SIZE, MAX_NESTING, MAX_NODES, MAX_NPZ_INFLATE, flatten_tensors, numpy_dtype_name, read_npy, read_view,
    view_span,
)
from workers.modelfiles.types import ModelFileError

WRAPPER_KEY = "state_dict"
# transformers refuses a file whose metadata lacks format=pt (save_pretrained writes it): the converter
# writes it beside any other metadata, so a source value of that name cannot be kept.
RESERVED_METADATA = {"format": "pt"}
MAX_METADATA_VALUE = 64 << 10  # characters; real ones (hyper-parameters, versions) are short
MAX_METADATA_ENTRIES = 10_000  # the strict reader allows 100K; a checkpoint with more is not metadata
MAX_LISTED = 200  # dropped entries named one by one; the rest are counted


class PlanError(ModelFileError):
    """The checkpoint cannot be written as safetensors faithfully; the message says why."""


@dataclass(frozen=True)
class Dropped:
    name: str   # dotted name in the checkpoint ("optimizer_states", "hyper_parameters.loss_fn")
    what: str   # "a pytorch_lightning...ModelCheckpoint object", "12 tensors (4.2 MB)"
    why: str

    def to_json(self) -> dict:
        return {"name": self.name, "what": self.what, "why": self.why}


@dataclass(frozen=True)
class PlannedTensor:
    """One tensor to write, and where its values come from (exactly one of span / load / array)."""
    name: str
    dtype: str                                  # as stored in the source (safetensors names)
    shape: tuple[int, ...]
    span: tuple[int, int] | None = None         # (file offset, bytes): C-contiguous in the file, read as is
    big_endian: bool = False                    # the span's byte order
    load: Callable[[], np.ndarray] | None = None  # strided views, inflated npz arrays: materialised when written
    array: np.ndarray | None = None             # values a bare pickle held (already in memory)

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * ELEMENT_SIZE[self.dtype]


@dataclass
class Selection:
    tensors: list[PlannedTensor] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    dropped: list[Dropped] = field(default_factory=list)
    dropped_count: int = 0     # all dropped entries, including those past MAX_LISTED
    # Dropped tensors the fingerprint counts (not training state it ignores): when > 0 the source's
    # content_id covers tensors the output lacks, so the two cannot be compared.
    dropped_weights: int = 0
    unwrapped: str = ""        # WRAPPER_KEY when a Lightning-style wrapper was unwrapped


# --- torch checkpoints and bare pickles -----------------------------------------------------

def select_from_graph(value, *, locate: Callable[[StorageRef], tuple[int, int]] | None, file_size: int,
                      big_endian: bool = False, buf=None) -> Selection:
    """Plan the output from a restricted-reader graph. `locate(storage) -> (file offset, bytes held)`
    (None for a bare pickle, which holds no storages); `buf`: the mapped file, for strided views."""
    walker = _Walker(locate=locate, file_size=file_size, big_endian=big_endian, buf=buf)
    if _is_wrapper(value):
        walker.selection.unwrapped = WRAPPER_KEY
        walker.visit(value[WRAPPER_KEY], "", source_prefix=WRAPPER_KEY + ".", depth=1, group=None)
        for key, child in value.items():
            if key != WRAPPER_KEY:
                name = _key_name(key) or type(key).__name__
                walker.visit(child, name, source_prefix="", depth=1, group=name)
    else:
        walker.visit(value, "", source_prefix="", depth=0, group=None)
    return walker.finish()


def _is_wrapper(value) -> bool:
    if not isinstance(value, dict) or not isinstance(value.get(WRAPPER_KEY), dict):
        return False
    return any(True for _ in flatten_tensors(value[WRAPPER_KEY]))


class _Walker:
    def __init__(self, *, locate, file_size: int, big_endian: bool, buf) -> None:
        self.locate, self.file_size, self.big_endian, self.buf = locate, file_size, big_endian, buf
        self.selection = Selection()
        self.names: set[str] = set()
        self.budget = MAX_NODES
        self.on_path: set[int] = set()
        self.training: dict[str, list[int]] = {}  # top-level key -> [tensors, bytes] dropped
        self.storages: dict[str, StorageRef] = {}

    def visit(self, value, name: str, *, source_prefix: str, depth: int, group: str | None) -> None:
        self.budget -= 1
        if self.budget < 0:
            raise PlanError(f"the checkpoint's object graph has more than {MAX_NODES} entries")
        if depth > MAX_NESTING:
            raise PlanError(f"{name or 'the checkpoint'}: nested more than {MAX_NESTING} levels deep")
        if isinstance(value, NdarrayBuilder):
            value = value.array
        if isinstance(value, TensorRef) or (isinstance(value, np.ndarray) and numpy_dtype_name(value.dtype)):
            if group is not None:
                self._training_tensor(group, value, source_name=name)
            else:
                self._tensor(name, value)
            return
        text = plain_text(value)
        if text is not None:
            self._metadata(name, text)
            return
        if isinstance(value, (dict, list, tuple)):
            if id(value) in self.on_path:
                raise PlanError(f"{name or 'the checkpoint'}: the object graph is cyclic")
            self.on_path.add(id(value))
            for key, child in _children(value):
                if key is None:
                    self._drop(_join(name, "?"), "an entry whose key is not text or a number",
                               "only text and number keys can become names")
                    continue
                self.visit(child, _join(name, key), source_prefix=source_prefix, depth=depth + 1, group=group)
            self.on_path.discard(id(value))
            return
        if isinstance(value, Opaque):
            inside = [n for n, _ in flatten_tensors(value, source_prefix + name)]
            self.selection.dropped_weights += sum(not is_ignored_key(n) for n in inside)
            holding = f", holding {len(inside)} tensor{'s' * (len(inside) != 1)}" if inside else ""
            self._drop(name, f"a {value.module}.{value.name} object{holding}",
                       "an instance of a class outside the allowlist: its class is never imported, so only "
                       "plain values and tensors can be kept")
            return
        self._drop(name, _describe(value), "not a tensor or a plain value")

    # --- what each leaf becomes ---

    def _tensor(self, name: str, value) -> None:
        """`value`: a TensorRef, a numeric ndarray, or a PlannedTensor already made (numpy files)."""
        if not name:
            raise PlanError("the checkpoint is a single tensor with no name: nothing to call it in a safetensors file")
        if name in self.names:
            raise PlanError(f"two tensors would both be named {name[:200]!r} (a key with a '.' beside a nested "
                            "dict of the same path)")
        if len(name) > MAX_NAME_LENGTH:
            raise PlanError(f"a tensor name of {len(name)} characters is longer than safetensors readers accept "
                            f"({MAX_NAME_LENGTH})")
        if not _is_text(name):
            raise PlanError(f"tensor name {name[:200]!r} is not valid Unicode")
        if len(self.selection.tensors) >= MAX_TENSORS:
            raise PlanError(f"more than {MAX_TENSORS} tensors, more than the strict reader accepts")
        planned = value if isinstance(value, PlannedTensor) else self._planned(name, value)
        if len(planned.shape) > MAX_RANK:
            raise PlanError(f"{name[:200]}: rank {len(planned.shape)} is more than the strict reader accepts ({MAX_RANK})")
        self.names.add(name)
        self.selection.tensors.append(planned)

    def _planned(self, name: str, value) -> PlannedTensor:
        if isinstance(value, np.ndarray):
            little = value.astype(value.dtype.newbyteorder("<"), copy=False)
            return PlannedTensor(name, numpy_dtype_name(value.dtype), tuple(value.shape),
                                 array=np.ascontiguousarray(little))
        if self.locate is None:
            raise PlanError("a bare pickle refers to tensor storages it does not contain")
        storage = self.storages.setdefault(value.storage.key, value.storage)
        if storage != value.storage:
            raise PlanError(f"storage {storage.key!r} is declared twice with different types or sizes")
        start, available = self.locate(value.storage)
        span = view_span(name, value, start=start, available=available, file_size=self.file_size)
        if span.contiguous:
            return PlannedTensor(name, value.dtype, tuple(value.size), span=(span.begin, span.count * span.item),
                                 big_endian=self.big_endian)
        buf, big_endian = self.buf, self.big_endian

        def load() -> np.ndarray:  # views of a shared storage, transposes, expands: copied as torch's .contiguous()
            return read_view(buf, name, value, start=start, available=available, big_endian=big_endian).array

        return PlannedTensor(name, value.dtype, tuple(value.size), load=load)

    def _training_tensor(self, group: str, value, *, source_name: str) -> None:
        counts = self.training.setdefault(group, [0, 0])
        counts[0] += 1
        if isinstance(value, np.ndarray):
            counts[1] += value.nbytes
        else:
            counts[1] += math.prod(value.size) * ELEMENT_SIZE.get(value.dtype, 0)
        if not is_ignored_key(source_name):
            self.selection.dropped_weights += 1

    def _metadata(self, name: str, text: str) -> None:
        if not name:
            return  # a checkpoint that is one plain value: nothing to name it
        why = ""
        if name in RESERVED_METADATA:
            why = f"the name is safetensors' own (the converter writes {name}={RESERVED_METADATA[name]})"
        elif name in self.selection.metadata:
            why = "another value already has this name"
        elif len(text) > MAX_METADATA_VALUE:
            why = f"longer than {MAX_METADATA_VALUE:,} characters, too long for a header"
        elif len(self.selection.metadata) >= MAX_METADATA_ENTRIES:
            why = f"more than {MAX_METADATA_ENTRIES:,} values: the rest are not kept"
        elif not (_is_text(name) and _is_text(text)):
            why = "not valid Unicode"
        if why:
            self._drop(name, f"the value {text[:60]!r}", why)
        else:
            self.selection.metadata[name] = text

    def _drop(self, name: str, what: str, why: str) -> None:
        self.selection.dropped_count += 1
        if len(self.selection.dropped) < MAX_LISTED:
            self.selection.dropped.append(Dropped(name or "(the checkpoint)", what, why))

    def finish(self) -> Selection:
        for group, (count, nbytes) in self.training.items():
            self._drop(group, f"{count} tensor{'s' * (count != 1)} ({nbytes:,} bytes)",
                       "training state beside the state_dict (optimizer, callbacks, schedulers), not model weights")
        if not self.selection.tensors:
            raise PlanError("nothing to convert: the checkpoint holds no tensor that could be written")
        self.selection.tensors.sort(key=lambda t: t.name)
        return self.selection


def plain_text(value) -> str | None:
    """The metadata string of a plain value, or None if `value` is not one."""
    if isinstance(value, str):
        return value
    scalar = _plain_scalar(value)
    if scalar is not _NOT_PLAIN:
        return _json(scalar)
    if isinstance(value, (list, tuple)) and value:
        items = [v if isinstance(v, str) else _plain_scalar(v) for v in value]
        if all(item is not _NOT_PLAIN for item in items):
            return _json(items)
    return None


_NOT_PLAIN = object()


def _plain_scalar(value):
    """A JSON-able Python value for None, booleans, numbers and numpy scalars; _NOT_PLAIN otherwise."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, np.generic):
        if isinstance(value, (np.bool_, np.integer, np.floating)):
            return value.item()
        return _NOT_PLAIN
    if isinstance(value, int):
        return value if value.bit_length() <= 4096 else _NOT_PLAIN  # str() of a huge int is refused by Python
    if isinstance(value, float):
        return value
    return _NOT_PLAIN


def _json(value) -> str:
    return json.dumps(value, ensure_ascii=False)


def _children(value):
    if isinstance(value, dict):
        return [(_key_name(k), v) for k, v in value.items()]
    return [(str(i), v) for i, v in enumerate(value)]


def _key_name(key) -> str | None:
    if isinstance(key, str):
        return key
    if isinstance(key, bool) or isinstance(key, np.generic):
        return None
    if isinstance(key, int):
        return str(key) if key.bit_length() <= 256 else None
    if isinstance(key, OpaqueClass):  # Lightning keys its callbacks by class
        return str(key)
    return None


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _is_text(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: the strict reader refuses them
        return False
    return True


def _describe(value) -> str:
    if isinstance(value, (bytes, bytearray)):
        return f"{len(value):,} bytes of binary data"
    if isinstance(value, (set, frozenset)):
        return f"a set of {len(value)} items"
    if isinstance(value, OpaqueClass):
        return f"the class {value}"
    if isinstance(value, np.ndarray):
        return f"a numpy array of dtype {value.dtype}"
    if isinstance(value, (list, tuple)):
        return "an empty list"
    return f"a value of type {type(value).__name__}"


# --- numpy files --------------------------------------------------------------------------------

def select_from_npz(buf) -> Selection:
    """One tensor per .npy entry of an .npz archive (named by the entry, without .npy)."""
    walker = _Walker(locate=None, file_size=len(buf), big_endian=False, buf=buf)
    seen: set[str] = set()
    for entry in read_zip_directory(buf):
        if entry.name in seen:
            raise PlanError(f"npz: duplicate entry {entry.name!r}")
        seen.add(entry.name)
        local = read_zip_local(buf, entry)
        name = entry.name.removesuffix(".npy")
        if entry.method == 0:
            planned = _npy_planned(buf, local.data_offset, local.data_offset + entry.compressed_size, name)
        elif entry.method == 8:
            planned = _deflated_npy(buf, entry, local.data_offset, name)
        else:
            raise PlanError(f"npz: entry {entry.name!r} uses compression method {entry.method}")
        walker._tensor(name, planned)
    return walker.finish()


def select_from_npy(buf, *, name: str) -> Selection:
    walker = _Walker(locate=None, file_size=len(buf), big_endian=False, buf=buf)
    walker._tensor(name, _npy_planned(buf, 0, len(buf), name))
    return walker.finish()


def _npy_planned(buf, start: int, end: int, name: str) -> PlannedTensor:
    header = read_npy_header(buf, start=start, end=end)
    dtype = numpy_dtype_name(header.dtype)
    if dtype is None:
        raise PlanError(f"npy {name!r}: dtype {header.descr!r} is not a plain numeric type")
    nbytes = math.prod(header.shape) * header.dtype.itemsize
    if header.data_offset + nbytes > end:
        raise PlanError(f"npy {name!r}: data shorter than its shape")
    if not header.fortran_order or len([n for n in header.shape if n != 1]) <= 1:
        return PlannedTensor(name, dtype, header.shape, span=(header.data_offset, nbytes),
                             big_endian=header.dtype.byteorder == ">")
    return PlannedTensor(name, dtype, header.shape, load=lambda: read_npy(buf, start, end, name).array)


def _deflated_npy(buf, entry, data_offset: int, name: str) -> PlannedTensor:
    # Only the header is inflated now; the array is inflated when it is written, once, and never
    # past what the entry declares (a lying header stops there instead of inflating a bomb).
    if entry.size > MAX_NPZ_INFLATE:
        raise PlanError(f"npz: array {name!r} declares {entry.size:,} bytes, more than the {MAX_NPZ_INFLATE:,} "
                        "we inflate")
    head = read_zip_entry(buf, entry, data_offset, limit=min(entry.size, 1 << 20))
    header = read_npy_header(head, start=0, end=len(head))
    dtype = numpy_dtype_name(header.dtype)
    if dtype is None:
        raise PlanError(f"npy {name!r}: dtype {header.descr!r} is not a plain numeric type")
    if header.data_offset + math.prod(header.shape) * header.dtype.itemsize != entry.size:
        raise PlanError(f"npz: array {name!r} does not fill the {entry.size:,} bytes its entry declares")

    def load() -> np.ndarray:
        data = read_zip_entry(buf, entry, data_offset, limit=entry.size + 1)
        if len(data) != entry.size:
            raise PlanError(f"npz: array {name!r} inflates to a size other than the {entry.size:,} bytes declared")
        return read_npy(data, 0, len(data), name).array

    return PlannedTensor(name, dtype, header.shape, load=load)
