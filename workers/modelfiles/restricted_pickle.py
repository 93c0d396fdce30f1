"""A restricted pickle reader: the inert hook of our opcode machine, not pickle.Unpickler.

pickle_machine decodes and keeps the stack, MARKs and memo exactly as for the scanner;
this module only says what values are.

Like torch's weights-only unpickler, but nothing a file names is ever imported:
every GLOBAL / STACK_GLOBAL is an exact (module, name) match against
`STAND_INS`, which maps to local inert stand-ins (tensors become `TensorRef`
records, storages `StorageRef`s). Globals the scanner calls merely "suspicious"
(unknown but not known to run code) become `OpaqueClass`/`Opaque` records so a
Lightning checkpoint still yields its state_dict; anything else raises.

PURE: no Django, no torch.
"""
from __future__ import annotations

import re
import reprlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from workers.modelfiles.pickle_machine import PickleMachine, iter_ops
from workers.modelfiles.pickle_scan import INERT_BUILTINS, TORCH_DTYPES, TORCH_STORAGE_DTYPES, classify_global
from workers.modelfiles.types import ModelFileError, UnsupportedModelFile

_STORAGE_KEY = re.compile(r"[0-9A-Za-z_.\-]{1,128}")
# Values the interpreter may create (strings, numbers, containers, call results). A tensor
# costs ~15 in torch's data.pkl, so this reads ~130K tensors (real files have < 100K) and
# keeps a pickle of 20M one-byte EMPTY_LISTs from costing ~1.3 GB (~60 bytes each).
MAX_VALUES = 2_000_000
# Items a stand-in builtin may make out of a range or a count (list(range(n)), bytes(n)).
MAX_EXPANDED = 1 << 20
MAX_NUMBER_TEXT = 4300  # digits int()/float() parse: CPython's own default int limit
_REPR = reprlib.Repr()  # Python 3.11 takes no keyword arguments here
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlong = 2, 60, 60, 40


def short_repr(value) -> str:
    """A bounded repr for error messages: the full repr of a memo-built graph is exponential."""
    return _REPR.repr(value)


@dataclass(frozen=True)
class StorageType:
    name: str    # e.g. 'FloatStorage', 'UntypedStorage'
    dtype: str   # safetensors name; 'U8' for untyped (sizes in bytes)


@dataclass(frozen=True)
class TorchDtype:
    name: str    # e.g. 'float16'
    dtype: str   # safetensors name


@dataclass(frozen=True)
class StorageRef:
    key: str
    dtype: str       # safetensors name of the storage's elements
    numel: int       # in elements of `dtype`
    location: str


@dataclass(frozen=True)
class TensorRef:
    """What torch's _rebuild_tensor* would build, as a record: a view of a storage."""
    storage: StorageRef
    offset: int
    size: tuple
    stride: tuple
    dtype: str


@dataclass(frozen=True)
class OpaqueClass:
    module: str
    name: str

    def __str__(self) -> str:
        return f"{self.module}.{self.name}"


@dataclass(eq=False)
class Opaque:
    """An instance of a class we do not know; we only record what the pickle gave it."""
    module: str
    name: str
    args: tuple = ()
    state: object = None
    items: dict = field(default_factory=dict)
    list: list = field(default_factory=list)


# --- stand-ins -----------------------------------------------------------------

def _tensor(storage, offset, size, stride, dtype=None) -> TensorRef:
    if not isinstance(storage, StorageRef):
        raise ModelFileError("tensor rebuilt from something that is not a storage")
    if not _is_int(offset) or not _int_tuple(size) or not _int_tuple(stride):
        raise ModelFileError("tensor offset, size and stride must be integers")
    return TensorRef(storage, offset, tuple(size), tuple(stride), dtype or storage.dtype)


def _rebuild_tensor(storage, offset, size, stride):
    return _tensor(storage, offset, size, stride)


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    return _tensor(storage, offset, size, stride)


def _rebuild_tensor_v3(storage, offset, size, stride, requires_grad, backward_hooks, dtype, metadata=None):
    if not isinstance(dtype, TorchDtype):
        raise ModelFileError("_rebuild_tensor_v3 without a torch dtype")
    return _tensor(storage, offset, size, stride, dtype.dtype)


def _rebuild_parameter(data, requires_grad, backward_hooks, state=None):
    if not isinstance(data, TensorRef):
        raise ModelFileError("parameter rebuilt from something that is not a tensor")
    return data


class NumpyDtype:
    """numpy.dtype(code, align, copy) plus BUILD's state; only plain numeric kinds."""

    def __init__(self, code, align=False, copy=True):
        if not isinstance(code, str) or not re.fullmatch(r"[biufc]\d{1,2}", code):
            raise ModelFileError(f"numpy dtype {short_repr(code)} is not a plain numeric type")
        self.code = code
        self.byteorder = "|"

    def __setstate__(self, state) -> None:
        if not isinstance(state, tuple) or len(state) < 2 or state[1] not in ("<", ">", "|", "="):
            raise ModelFileError("bad numpy dtype state")
        self.byteorder = state[1]

    def to_numpy(self) -> np.dtype:
        dtype = np.dtype(("" if self.byteorder == "|" else self.byteorder) + self.code)
        if dtype.hasobject or dtype.fields:
            raise ModelFileError("numpy dtype with objects or fields")
        return dtype


def _numpy_scalar(dtype, data=None):
    if not isinstance(dtype, NumpyDtype) or not isinstance(data, bytes):
        raise ModelFileError("numpy scalar needs a numeric dtype and raw bytes")
    np_dtype = dtype.to_numpy()
    if len(data) != np_dtype.itemsize:
        raise ModelFileError("numpy scalar bytes do not match its dtype")
    return np.frombuffer(data, dtype=np_dtype, count=1)[0].copy()


class _NdarrayClass:
    """Stand-in for numpy.ndarray: only usable as _reconstruct's first argument."""


class NdarrayBuilder:
    """numpy's _reconstruct(ndarray, shape, typecode) followed by BUILD(state)."""

    def __init__(self):
        self.array: np.ndarray | None = None

    def __setstate__(self, state) -> None:
        if not isinstance(state, tuple) or len(state) != 5:
            raise ModelFileError("bad ndarray state")
        _version, shape, dtype, fortran, raw = state
        if not isinstance(dtype, NumpyDtype) or not isinstance(raw, bytes) or not _int_tuple(shape):
            raise ModelFileError("ndarray state must hold a numeric dtype and raw bytes")
        np_dtype = dtype.to_numpy()
        count = int(np.prod(shape, dtype=object)) if shape else 1
        if count * np_dtype.itemsize != len(raw):
            raise ModelFileError("ndarray bytes do not match its shape")
        flat = np.frombuffer(raw, dtype=np_dtype, count=count)
        self.array = np.array(flat.reshape(shape, order="F" if fortran else "C"), order="C")


def _reconstruct(cls, shape, typecode):
    if cls is not _NDARRAY:
        raise ModelFileError("numpy _reconstruct of something other than ndarray")
    return NdarrayBuilder()


def _codecs_encode(text, encoding="utf-8", errors="strict"):
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise ModelFileError("_codecs.encode is allowed only to turn latin-1 text into bytes")
    return text.encode("latin-1")


def _torch_size(dims=()):
    if not _int_tuple(dims):
        raise ModelFileError("torch.Size of non-integers")
    return tuple(dims)


def _torch_device(*args):
    return ("device",) + tuple(str(a) for a in args)


# --- builtins (the allowlist is pickle_scan.INERT_BUILTINS) -------------------------

_PLAIN = (str, bytes, bytearray, int, float, complex, bool, type(None))
_MATERIAL = (list, tuple, set, frozenset, dict, str, bytes, bytearray)
_TEXT_CODECS = frozenset({"utf-8", "utf8", "latin-1", "latin1", "iso-8859-1", "ascii"})


def _iterable(value, what: str):
    """`value` if iterating it cannot expand memory: a container already built, or a short range."""
    if isinstance(value, _MATERIAL):
        return value
    if isinstance(value, range):
        try:
            items = len(value)
        except OverflowError:  # more than sys.maxsize
            items = None
        if items is None or items > MAX_EXPANDED:
            raise ModelFileError(f"builtins.{what} of a range of {items or 'more than 2**63'} items is not expanded")
        return value
    raise ModelFileError(f"builtins.{what} of {type(value).__name__} is not read")


def _number_text(value, what: str):
    if isinstance(value, (str, bytes, bytearray)) and len(value) > MAX_NUMBER_TEXT:
        raise ModelFileError(f"builtins.{what} of a {len(value)}-character string is not parsed")
    if not isinstance(value, (str, bytes, bytearray, int, float, bool)):
        raise ModelFileError(f"builtins.{what} of {type(value).__name__} is not read")
    return value


def _codec(encoding, errors) -> tuple[str, str]:
    # Only text codecs: others (zlib_codec, ...) could decompress a bomb before failing.
    if not isinstance(encoding, str) or encoding.lower().replace("_", "-") not in _TEXT_CODECS:
        raise ModelFileError(f"text encoding {short_repr(encoding)} is not used")
    if errors not in (None, "strict", "replace", "ignore", "surrogateescape"):
        raise ModelFileError(f"decoding errors={short_repr(errors)} is not used")
    return encoding, errors or "strict"


def _builtin_bytes(kind, source=b"", encoding=None, errors=None):
    if encoding is not None:
        if not isinstance(source, str):
            raise ModelFileError(f"builtins.{kind.__name__} with an encoding needs text")
        return kind(source, *_codec(encoding, errors))
    if isinstance(source, int) and not isinstance(source, bool):
        if not 0 <= source <= MAX_EXPANDED:
            raise ModelFileError(f"builtins.{kind.__name__}({source}) is not allocated")
        return kind(source)
    if isinstance(source, (bytes, bytearray)):
        return kind(source)
    return kind(_iterable(source, kind.__name__))


def _builtin_str(value="", encoding=None, errors=None):
    if encoding is not None:
        if not isinstance(value, (bytes, bytearray)):
            raise ModelFileError("builtins.str with an encoding needs bytes")
        return str(value, *_codec(encoding, errors))
    if not isinstance(value, _PLAIN):  # the repr of a memo-built graph is exponential
        raise ModelFileError(f"builtins.str of {type(value).__name__} is not made")
    return str(value)


def _builtin_dict(mapping=()):
    if isinstance(mapping, dict):
        return dict(mapping)
    return dict(_iterable(mapping, "dict"))


def _builtin_complex(real=0, imag=0):
    return complex(_number_text(real, "complex"), _number_text(imag, "complex"))


def _builtin_bool(value=False):
    if not isinstance(value, _PLAIN + _MATERIAL + (range,)):
        raise ModelFileError(f"builtins.bool of {type(value).__name__} is not read")
    return bool(value)


def _builtin_range(*args):
    if not 1 <= len(args) <= 3 or not all(_is_int(a) for a in args):
        raise ModelFileError("builtins.range needs one to three integers")
    return range(*args)  # lazy: only our stand-ins iterate it, and they cap it


def _builtin_slice(*args):
    if not 1 <= len(args) <= 3 or not all(isinstance(a, _PLAIN) for a in args):
        raise ModelFileError("builtins.slice needs one to three plain values")
    return slice(*args)


_BUILTIN_CALLS: dict[str, Callable] = {
    "dict": _builtin_dict,
    "list": lambda items=(): list(_iterable(items, "list")),
    "tuple": lambda items=(): tuple(_iterable(items, "tuple")),
    "set": lambda items=(): set(_iterable(items, "set")),
    "frozenset": lambda items=(): frozenset(_iterable(items, "frozenset")),
    "len": lambda items: len(_iterable(items, "len")),
    "int": lambda value=0, *base: int(_number_text(value, "int"), *base),
    "float": lambda value=0.0: float(_number_text(value, "float")),
    "complex": _builtin_complex,
    "bool": _builtin_bool,
    "str": _builtin_str,
    "bytes": lambda *args: _builtin_bytes(bytes, *args),
    "bytearray": lambda *args: _builtin_bytes(bytearray, *args),
    "slice": _builtin_slice,
    "range": _builtin_range,
}
assert set(_BUILTIN_CALLS) == INERT_BUILTINS, "every allowlisted builtin needs a checked stand-in"


@dataclass(frozen=True)
class InertBuiltin:
    """builtins.<name> as the pickle sees it: a value (argparse's type=int in hyper-parameters)
    that, when called, runs a checked version refusing arguments that would expand memory."""
    name: str

    def __call__(self, *args):
        return _BUILTIN_CALLS[self.name](*args)


_NDARRAY = _NdarrayClass()
STAND_INS: dict[str, object] = {
    "collections.OrderedDict": OrderedDict,
    "torch._utils._rebuild_tensor": _rebuild_tensor,
    "torch._utils._rebuild_tensor_v2": _rebuild_tensor_v2,
    "torch._utils._rebuild_tensor_v3": _rebuild_tensor_v3,
    "torch._utils._rebuild_parameter": _rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
    "torch.storage.UntypedStorage": StorageType("UntypedStorage", "U8"),
    **{f"torch.{name}": StorageType(name, dtype) for name, dtype in TORCH_STORAGE_DTYPES.items()},
    **{f"torch.{name}": TorchDtype(name, dtype) for name, dtype in TORCH_DTYPES.items()},
    "torch.Size": _torch_size,
    "torch.device": _torch_device,
    "numpy.core.multiarray.scalar": _numpy_scalar,
    "numpy._core.multiarray.scalar": _numpy_scalar,
    "numpy.core.multiarray._reconstruct": _reconstruct,
    "numpy._core.multiarray._reconstruct": _reconstruct,
    "numpy.dtype": NumpyDtype,
    "numpy.ndarray": _NDARRAY,
    "_codecs.encode": _codecs_encode,
    **{f"builtins.{name}": InertBuiltin(name) for name in INERT_BUILTINS},
}
_CALLABLE_STAND_INS = frozenset(v for v in STAND_INS.values() if callable(v))


def storage_from_persistent_id(pid) -> StorageRef:
    """Validate ('storage', storage_type, key, location, numel[, view_metadata=None])."""
    if not isinstance(pid, tuple) or len(pid) not in (5, 6) or pid[0] != "storage":
        raise ModelFileError(f"unsupported persistent id {short_repr(pid)}")
    _, storage_type, key, location, numel = pid[:5]
    if len(pid) == 6 and pid[5] is not None:
        raise UnsupportedModelFile("legacy storage views (torch < 0.4) are not read")
    if not isinstance(storage_type, StorageType):
        raise ModelFileError("persistent id without a known storage type")
    if not isinstance(key, str) or not _STORAGE_KEY.fullmatch(key):
        raise ModelFileError(f"bad storage key {short_repr(key)}")
    if not isinstance(location, str) or len(location) > 64:
        raise ModelFileError("bad storage location")
    if not _is_int(numel) or numel < 0:
        raise ModelFileError("bad storage size")
    return StorageRef(key, storage_type.dtype, numel, location)


def _is_int(value) -> bool:
    return type(value) is int


def _int_tuple(values) -> bool:
    return isinstance(values, (tuple, list)) and len(values) <= 64 and all(_is_int(v) for v in values)


# --- the inert hook ---------------------------------------------------------------

def load_restricted(buf, *, start: int = 0, end: int | None = None,
                    persistent_load: Callable[[object], object] = storage_from_persistent_id,
                    ) -> tuple[object, int]:
    """Interpret one pickle from `start`; return (value, offset after STOP).

    Raises ModelFileError for anything outside the allowlist or malformed; FRAMEs are
    checked strictly (any anomaly the scanner reports is refused here).
    """
    machine = PickleMachine(_Inert(persistent_load), max_values=MAX_VALUES)
    try:
        return machine.run(iter_ops(buf, start=start, end=end, keep_bytes=True))
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError,
            RecursionError, MemoryError) as exc:
        detail = "" if isinstance(exc, KeyError) else f": {str(exc)[:200]}"  # KeyError's str is a repr
        raise ModelFileError(f"restricted pickle: {type(exc).__name__}{detail}") from exc


def _parse_int(line: bytes) -> int:
    text = line.decode("latin-1").strip()
    try:
        return int(text, 0)
    except ValueError:
        return int(text, 10)  # leading zeros


def _int_line(line: bytes):
    text = line.strip()
    return text == b"01" if text in (b"00", b"01") else _parse_int(text)  # protocol 0 spells bools 00/01


# Literal opcodes whose value is not the decoded argument itself.
_LITERALS: dict[str, Callable] = {
    "BYTEARRAY8": bytearray,
    "INT": _int_line,
    "LONG": lambda line: _parse_int(line.rstrip(b"L")),
    "FLOAT": lambda line: float(line.decode("latin-1")),
    "NONE": lambda _: None, "NEWTRUE": lambda _: True, "NEWFALSE": lambda _: False,
    "EMPTY_LIST": lambda _: [], "EMPTY_TUPLE": lambda _: (), "EMPTY_DICT": lambda _: {}, "EMPTY_SET": lambda _: set(),
}
_COLLECT: dict[str, Callable[[list], object]] = {
    "LIST": lambda items: items,  # the machine hands over a list of its own
    "TUPLE": tuple, "TUPLE1": tuple, "TUPLE2": tuple, "TUPLE3": tuple, "FROZENSET": frozenset,
    "DICT": lambda items: dict(zip(items[::2], items[1::2], strict=True)),
}


class _Inert:
    """The machine's inert hook: real plain values, allowlisted globals as their stand-ins,
    unknown-but-harmless classes as `OpaqueClass`/`Opaque` records; the rest raises."""
    # never in a weights file; INST/OBJ/EXT* name or call globals in ways torch never writes
    refused = frozenset({"INST", "OBJ", "EXT1", "EXT2", "EXT4", "PERSID", "NEXT_BUFFER", "READONLY_BUFFER"})

    def __init__(self, persistent_load):
        self.persistent_load = persistent_load

    def literal(self, op: str, arg, pos: int):
        convert = _LITERALS.get(op)
        return arg if convert is None else convert(arg)

    def collect(self, op: str, items: list, pos: int):
        return _COLLECT[op](items)

    def add_to(self, op: str, target, items: list, pos: int) -> None:
        if op in ("APPEND", "APPENDS"):
            _extend(target, items, pos)
        elif op == "ADDITEMS":
            if not isinstance(target, set):
                raise ModelFileError("restricted pickle: ADDITEMS on a non-set")
            target.update(items)
        else:
            _setitems(target, items, pos)

    def build(self, target, state, pos: int) -> None:
        if isinstance(target, Opaque):
            target.state = state
        elif isinstance(target, (NumpyDtype, NdarrayBuilder)):
            target.__setstate__(state)
        elif type(target) is OrderedDict and isinstance(state, dict):
            # torch.save(model.state_dict()): the OrderedDict carries `_metadata` (per-module
            # versions) as instance state. torch's weights_only unpickler sets it; the weights do not
            # need it, so it is dropped: nothing of the file's is ever set on a live object.
            pass
        else:
            raise ModelFileError(f"restricted pickle: BUILD on {type(target).__name__} at byte {pos}")

    def find(self, module: str, name: str, op: str, pos: int):
        full = f"{module}.{name}"
        if full in STAND_INS:
            return STAND_INS[full]
        severity, why = classify_global(module, name)
        if severity == "suspicious":
            return OpaqueClass(module, name)
        raise ModelFileError(f"restricted pickle: global {full} refused ({why})")

    def computed_global(self, op: str, pos: int):
        raise ModelFileError(f"restricted pickle: global operands are not strings at byte {pos}")

    def call(self, op: str, callee, args, kwargs, pos: int):
        if kwargs:
            raise ModelFileError("restricted pickle: NEWOBJ_EX with keyword arguments")
        if not isinstance(args, tuple):
            raise ModelFileError(f"restricted pickle: call arguments are not a tuple at byte {pos}")
        if isinstance(callee, OpaqueClass):
            return Opaque(callee.module, callee.name, args)
        if callable(callee) and callee in _CALLABLE_STAND_INS:
            return callee(*args)
        raise ModelFileError(f"restricted pickle: cannot call {type(callee).__name__} at byte {pos}")

    def persistent(self, op: str, pid, pos: int):
        return self.persistent_load(pid)

    def extension(self, op: str, code: int, pos: int):
        self.refuse(op, pos)

    def buffer(self, op: str, pos: int):
        self.refuse(op, pos)

    def memo_key(self, key: int, pos: int) -> None:
        pass  # Memo bounds its own size

    def refuse(self, op: str, pos: int):
        raise ModelFileError(f"restricted pickle: opcode {op} is not allowed (byte {pos})")


def _extend(target, items, pos: int) -> None:
    if isinstance(target, list):
        target.extend(items)
    elif isinstance(target, Opaque):
        target.list.extend(items)
    else:
        raise ModelFileError(f"restricted pickle: append to {type(target).__name__} at byte {pos}")


def _setitems(target, items, pos: int) -> None:
    if len(items) % 2:
        raise ModelFileError(f"restricted pickle: odd SETITEMS at byte {pos}")
    if isinstance(target, Opaque):
        target = target.items
    if not isinstance(target, dict):
        raise ModelFileError(f"restricted pickle: set item on {type(target).__name__} at byte {pos}")
    for key, value in zip(items[::2], items[1::2]):
        target[key] = value
