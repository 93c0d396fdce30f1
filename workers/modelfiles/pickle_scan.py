"""Find what a pickle would import and call, without ever unpickling it.

Three parts, read top to bottom:
1. `iter_ops`: our own opcode decoder (bounded lines, arguments, op counts).
   It is never stricter than CPython: if we stop at a byte, CPython stops there too.
2. The policy: an allowlist of globals a weights file needs; a deny table that
   only explains WHY something outside it is dangerous.
3. A symbolic walk (stack, metastack, memo) that resolves every GLOBAL /
   STACK_GLOBAL / INST operand, even when fetched from the memo past decoys,
   and notices calls and mutations; then `scan_path`, which finds every pickle
   in a file: zip entries by content, consecutive pickles, tails, tar members,
   .npy object arrays, and pickles hiding at byte 0 of other formats.

PURE: no Django, no torch; nothing here imports a name read from a file.
"""
from __future__ import annotations

import _compat_pickle
import codecs
import mmap
import os
import pickletools
import struct
import tarfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from workers.modelfiles.sniff import (
    HEAD_BYTES, HIGHEST_PICKLE_PROTOCOL, MAX_NPY_HEADER, NPY_MAGIC, ZipEntry, describe_unknown,
    looks_like_pickle, read_npy_header, read_zip_directory, read_zip_entry, read_zip_local, sniff,
)
from workers.modelfiles.types import INCOMPLETE, Finding, ModelFileError, SafetyReport, TruncatedFileError

MAX_OPS = 20_000_000          # a large LLM data.pkl has a few million
MAX_MEMO = 5_000_000
# The pickler recurses once per nesting level, so real pickles nest less deep than
# Python's recursion limit (~1000); CPython's unpickler itself has no limit.
MAX_MARK_DEPTH = 100_000
# Values on the stack at once (all MARK levels). Picklers batch containers by 1000, so only a
# flat tuple this long gets near it; the cap keeps the walk's stack under ~40 MB.
MAX_STACK = 5_000_000
MAX_NAME_LINE = 1 << 16       # GLOBAL/INST/PERSID/number lines; longer names cannot be imported
MAX_SCANNED_STR = 1 << 16     # longer strings are "not statically known"
MAX_KEPT_BYTES = 1 << 30      # largest argument handed to the restricted reader
# Largest deflated zip entry we inflate (in memory) to scan it. torch never deflates its
# entries; re-zipped checkpoints have data.pkl files of a few MB. Bigger entries, declared or
# found while inflating, are reported as too large to analyse instead of costing memory.
MAX_INFLATE = 128 << 20
MAX_FINDINGS = 200
MAX_GLOBALS_SEEN = 10_000     # distinct names listed per file; real checkpoints use a few dozen
_SEVERITY_RANK = {"safe": 0, "suspicious": 1, "unreadable": 2, "dangerous": 3}


# --- 1. opcode decoder -------------------------------------------------------

class PickleStreamError(ModelFileError):
    """The byte stream stops being a pickle at `pos` (CPython would stop there too)."""

    def __init__(self, message: str, pos: int):
        super().__init__(f"{message} at byte {pos}")
        self.pos = pos


class PickleTruncated(PickleStreamError, TruncatedFileError):
    """The data ends in the middle of an instruction."""

    def __init__(self, message: str, pos: int):
        ModelFileError.__init__(self, message)  # "at byte N" would only distract from "incomplete download"
        self.pos = pos


class PickleLimitError(PickleStreamError):
    """One of OUR caps was hit: CPython would go on, so what follows is unanalysed."""


_OPCODES = {op.code.encode("latin-1")[0]: op for op in pickletools.opcodes}
_FRAME = 0x95
_STOP = 0x2E
_FIXED = {"uint1": "<B", "uint2": "<H", "int4": "<i", "uint4": "<I", "uint8": "<Q", "float8": ">d"}
_SIZED = {  # argument kind -> (length prefix format, value kind)
    "string1": ("<B", "str"), "string4": ("<i", "str"),
    "bytes1": ("<B", "bytes"), "bytes4": ("<I", "bytes"), "bytes8": ("<Q", "bytes"),
    "bytearray8": ("<Q", "bytes"),
    "unicodestring1": ("<B", "utf8"), "unicodestring4": ("<I", "utf8"), "unicodestring8": ("<Q", "utf8"),
    "long1": ("<B", "long"), "long4": ("<i", "long"),
}


@dataclass(frozen=True)
class FrameAnomaly:
    """A FRAME that pickle.py and _pickle.c do not read alike (or that no pickler writes)."""
    pos: int
    what: str
    why: str


class FrameCheck:
    """FRAME bookkeeping over the byte-by-byte reading, as pickle.py's _Unframer keeps it.

    Three readers matter, and they agree exactly when every frame is well formed:
    - pickle.py reads a frame into a buffer: an opcode argument that runs past the frame's
      end, or a new FRAME before the current one is used up, is an error; a FRAME longer
      than the rest of the data just holds the rest (it reads on);
    - _pickle.c over bytes in memory ignores frames once it has checked that all of the
      frame's bytes exist (a FRAME longer than the data stops it);
    - _pickle.c over a file object (torch.load reads data.pkl through io.BytesIO) keeps the
      frame in its buffer, and a read that does not fit in what is left of it throws that
      rest away and reads from the file after the frame: another pickle (`_iter_ops_c_file`).
    Well-formed means: each FRAME's bytes exist, no opcode with its argument crosses a
    frame's end, no FRAME starts inside another, and the pickle does not stop before its
    last frame ends (else loaders disagree where the next pickle starts). Anything else is
    an anomaly: `strict` raises at the first one (the restricted reader), otherwise they are
    collected and the walk goes on as far as any reader would.
    """

    def __init__(self, data_end: int, *, strict: bool, base: int = 0):
        self.data_end = data_end
        self.strict = strict
        self.base = base                  # byte numbers in messages count from here (the entry)
        self.end: int | None = None       # end of the current frame, None outside frames
        self.anomalies: list[FrameAnomaly] = []
        self.c_file_differs = False       # _pickle.c reading a file may see other opcodes
        self.next_starts: set[int] = set()  # where readers other than ours start the next pickle

    def _anomaly(self, pos: int, what: str, why: str) -> None:
        if self.strict:
            raise PickleStreamError(f"{what}: {why}", pos)
        if len(self.anomalies) < MAX_FINDINGS:
            self.anomalies.append(FrameAnomaly(pos, what, why))

    def step(self, code: int, name: str, arg, pos: int, next_pos: int) -> None:
        end = self.end
        if end is not None:
            if pos >= end:        # used up: pickle.py reads on from the data after the frame
                self.end = end = None
            elif next_pos > end:
                self._anomaly(pos, "opcode straddles a FRAME boundary",
                              f"{name} at byte {pos - self.base} reads {_bytes(next_pos - end)} past the end "
                              f"of its FRAME (byte {end - self.base}): pickle.py refuses it, and _pickle.c "
                              "reading a file skips the rest of the frame and reads other bytes as this argument")
                self.c_file_differs = True
                self.end = end = None
        if code == _FRAME:
            remaining = self.data_end - next_pos
            if end is not None and next_pos < end:
                self._anomaly(pos, "FRAME inside a FRAME",
                              f"a new FRAME starts {_bytes(end - next_pos)} before the current one ends: "
                              "pickle.py refuses it, and _pickle.c reading a file may skip those bytes")
                self.c_file_differs = True
            if arg > remaining:
                self._anomaly(pos, "FRAME longer than the data",
                              f"the FRAME claims {_bytes(arg)} but only {remaining} remain: _pickle.c stops "
                              "here while pickle.py reads on (and imports what follows)")
                self.end = self.data_end
            else:
                self.end = next_pos + arg
        elif code == _STOP and end is not None and end > next_pos:
            self._anomaly(pos, "FRAME runs past STOP",
                          f"the pickle stops {_bytes(end - next_pos)} before its FRAME ends: loaders disagree "
                          "about where the next pickle in the file starts")
            self.next_starts.add(end)


def _bytes(n: int) -> str:
    return "1 byte" if n == 1 else f"{n} bytes"


def iter_ops(buf, *, start: int = 0, end: int | None = None, keep_bytes: bool = False,
             max_ops: int = MAX_OPS, frames: FrameCheck | None = None) -> Iterator[tuple[str, object, int]]:
    """Yield (opcode name, argument, offset) up to and including STOP, byte by byte.

    Text arguments of INT/LONG/FLOAT/GET/PUT come back as raw `bytes` lines (the
    consumer parses them); strings longer than MAX_SCANNED_STR come back as None
    unless `keep_bytes`; bytes arguments come back as None unless `keep_bytes`.
    FRAMEs are checked by `frames` (default: a strict FrameCheck that raises on any anomaly).
    """
    end = len(buf) if end is None else end
    if frames is None:
        frames = FrameCheck(end, strict=True, base=start)
    no_frame = end + 1  # no op ends past `end`: outside frames the check below never fires
    frame_end = no_frame if frames.end is None else frames.end
    pos = start
    for _ in range(max_ops):
        if pos >= end:
            raise PickleStreamError("pickle ends without STOP", pos)
        code = buf[pos]
        info = _OPCODES.get(code)
        if info is None:
            raise PickleStreamError(f"invalid opcode {code:#04x}", pos)
        arg, next_pos = _read_arg(buf, info, pos + 1, end, keep_bytes)
        if next_pos > frame_end or code == _FRAME or code == _STOP:  # ops well inside a frame: nothing to do
            frames.step(code, info.name, arg, pos, next_pos)
            frame_end = no_frame if frames.end is None else frames.end
        yield info.name, arg, pos
        if code == _STOP:
            return
        pos = next_pos
    raise PickleLimitError(f"more than {max_ops} opcodes", pos)


def _read_arg(buf, info, pos: int, end: int, keep_bytes: bool):
    kind = info.arg.name if info.arg else None
    if kind is None:
        return None, pos
    if kind in _FIXED:
        fmt = _FIXED[kind]
        size = struct.calcsize(fmt)
        if pos + size > end:
            raise PickleTruncated(f"truncated: the pickle ends inside a {info.name} instruction — {INCOMPLETE}", pos)
        return struct.unpack(fmt, buf[pos:pos + size])[0], pos + size
    if kind in _SIZED:
        return _read_sized(buf, info, kind, pos, end, keep_bytes)
    if kind in ("stringnl", "unicodestringnl"):  # data strings: CPython reads any length
        newline = buf.find(b"\n", pos, end)
        if newline < 0:
            raise PickleStreamError("text argument without a newline", pos)
        if newline - pos > (MAX_KEPT_BYTES if keep_bytes else MAX_SCANNED_STR):
            if keep_bytes:
                raise PickleLimitError(f"{info.name} argument larger than we read", pos)
            return None, newline + 1
        line, pos = bytes(buf[pos:newline]), newline + 1
    else:
        line, pos = _read_line(buf, pos, end)
    if kind == "stringnl_noescape_pair":
        second, pos = _read_line(buf, pos, end)
        try:
            return (line.decode("utf-8"), second.decode("utf-8")), pos
        except UnicodeDecodeError as exc:
            raise PickleStreamError(f"{info.name} names are not UTF-8", pos) from exc
    if kind == "stringnl_noescape":
        return line.decode("latin-1"), pos
    try:
        if kind == "stringnl":
            if len(line) < 2 or line[:1] != line[-1:] or line[:1] not in (b"'", b'"'):
                raise PickleStreamError("STRING argument is not quoted", pos)
            return _as_str(codecs.escape_decode(line[1:-1])[0]), pos
        if kind == "unicodestringnl":
            return line.decode("raw-unicode-escape"), pos
    except (ValueError, UnicodeDecodeError) as exc:
        raise PickleStreamError(f"bad {info.name} argument: {exc}", pos) from exc
    return line, pos  # decimalnl_short, decimalnl_long, floatnl: parsed by the consumer


def _read_sized(buf, info, kind: str, pos: int, end: int, keep_bytes: bool):
    len_fmt, value_kind = _SIZED[kind]
    len_size = struct.calcsize(len_fmt)
    if pos + len_size > end:
        raise PickleTruncated(f"truncated: the pickle ends inside a {info.name} instruction — {INCOMPLETE}", pos)
    n = struct.unpack(len_fmt, buf[pos:pos + len_size])[0]
    pos += len_size
    if n < 0 or pos + n > end:
        raise PickleStreamError(f"{info.name} of {n} bytes runs past the data", pos)
    if value_kind == "long":
        if n > MAX_SCANNED_STR and not keep_bytes:
            return None, pos + n
        return int.from_bytes(buf[pos:pos + n], "little", signed=True), pos + n
    if not keep_bytes and (value_kind == "bytes" or n > MAX_SCANNED_STR):
        return None, pos + n
    if n > MAX_KEPT_BYTES:
        raise PickleLimitError(f"{info.name} of {n} bytes is larger than we read", pos)
    raw = bytes(buf[pos:pos + n])
    if value_kind == "bytes":
        return raw, pos + n
    if value_kind == "str":
        return _as_str(raw), pos + n
    try:
        return raw.decode("utf-8", "surrogatepass"), pos + n
    except UnicodeDecodeError as exc:
        raise PickleStreamError(f"{info.name} is not UTF-8", pos) from exc


def _read_line(buf, pos: int, end: int) -> tuple[bytes, int]:
    newline = buf.find(b"\n", pos, min(end, pos + MAX_NAME_LINE))
    if newline < 0:
        raise PickleStreamError("text argument without a newline", pos)
    return bytes(buf[pos:newline]), newline + 1


def _as_str(raw: bytes) -> str:
    """Protocol 0-2 byte strings as torch decodes them (utf-8), leniently."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def parse_memo_key(line: bytes, pos: int) -> int:
    try:
        return int(line.decode("latin-1"), 10)
    except ValueError as exc:
        raise PickleStreamError("bad memo key", pos) from exc


# --- _pickle.c reading a file object -------------------------------------------

class _CFileReads:
    """Where _pickle.c's Unpickler takes each read from when it reads a file object that has
    no peek() (torch.load hands it io.BytesIO(data.pkl)), or a FRAME larger than its 128 KiB
    prefetch (Modules/_pickle.c: load_frame, _Unpickler_Read, _Unpickler_ReadInto,
    _Unpickler_Readline). FRAME reads the frame's bytes into its buffer and rewinds; a read
    that does not fit in what is left of the buffer replaces the buffer with bytes read from
    the file, i.e. from after the frame, and the rest of the frame is never read. Only the
    BINBYTES/BYTEARRAY8 payloads (readinto) use the rest and continue from the file.
    Without anomalies this is the byte-by-byte reading."""

    def __init__(self, buf, pos: int, end: int):
        self.buf, self.pos, self.end = buf, pos, end
        self.buffered_to = pos          # the file position; == pos when nothing is buffered
        self.skipped: list[tuple[int, int]] = []

    def _from_file(self) -> int:
        if self.buffered_to > self.pos:
            self.skipped.append((self.pos, self.buffered_to))
        return self.buffered_to

    def _check(self, at: int, n: int) -> None:
        if n < 0 or at + n > self.end:
            raise PickleStreamError("pickle data was truncated", at)

    def read(self, n: int) -> int:
        """Start of the n bytes an _Unpickler_Read gets."""
        if self.pos + n <= self.buffered_to:
            at = self.pos
        else:
            at = self._from_file()
            self.buffered_to = at + n
        self._check(at, n)
        self.pos = at + n
        return at

    def readinto(self, n: int) -> int:
        at = self.pos
        self._check(at, n)
        self.pos = at + n
        self.buffered_to = max(self.buffered_to, self.pos)
        return at

    def readline(self, limit: int | None) -> tuple[int, int]:
        """(start, end) of a line without its newline; `limit` caps name lines as the decoder does."""
        if self.pos < self.buffered_to:
            newline = self.buf.find(b"\n", self.pos, self.buffered_to)
            if newline >= 0:
                at, self.pos = self.pos, newline + 1
                return at, newline
        at = self._from_file()
        stop = self.end if limit is None else min(self.end, at + limit)
        newline = self.buf.find(b"\n", at, stop)
        if newline < 0:
            raise PickleStreamError("text argument without a newline", at)
        self.pos = self.buffered_to = newline + 1
        return at, newline

    def frame(self, length: int) -> None:
        if self.pos + length <= self.buffered_to:
            return  # already buffered: _pickle.c only rewinds
        at = self._from_file()
        if at + length > self.end:
            raise PickleStreamError(f"FRAME of {length} bytes runs past the data", at)
        self.pos, self.buffered_to = at, at + length


def _iter_ops_c_file(buf, *, start: int, end: int, max_ops: int = MAX_OPS,
                     reads: _CFileReads | None = None) -> Iterator[tuple[str, object, int]]:
    """Like `iter_ops` (scanner arguments only), but as `_CFileReads` says _pickle.c reads a file."""
    reads = reads or _CFileReads(buf, start, end)
    for _ in range(max_ops):
        pos = reads.read(1)
        code = buf[pos]
        info = _OPCODES.get(code)
        if info is None:
            raise PickleStreamError(f"invalid opcode {code:#04x}", pos)
        arg = _c_file_arg(buf, info, reads)
        yield info.name, arg, pos
        if code == _STOP:
            return
    raise PickleLimitError(f"more than {max_ops} opcodes", reads.pos)


def _c_file_arg(buf, info, reads: _CFileReads):
    """The argument from the bytes _pickle.c reads for it, decoded by `_read_arg`."""
    kind = info.arg.name if info.arg else None
    if kind is None:
        return None
    if kind in _FIXED:
        size = struct.calcsize(_FIXED[kind])
        at = reads.read(size)
        value = struct.unpack(_FIXED[kind], buf[at:at + size])[0]
        if info.name == "FRAME":
            reads.frame(value)
        return value
    if kind in _SIZED:
        len_fmt, value_kind = _SIZED[kind]
        len_size = struct.calcsize(len_fmt)
        at = reads.read(len_size)
        prefix = bytes(buf[at:at + len_size])
        n = struct.unpack(len_fmt, prefix)[0]
        data_at = reads.readinto(n) if value_kind == "bytes" else reads.read(n)
        if value_kind == "bytes" or n > MAX_SCANNED_STR:
            return None  # what the byte-by-byte decoder returns for these too
        local = prefix + bytes(buf[data_at:data_at + n])
        return _read_arg(local, info, 0, len(local), False)[0]
    data_line = kind in ("stringnl", "unicodestringnl")
    at, newline = reads.readline(None if data_line else MAX_NAME_LINE)
    if data_line and newline - at > MAX_SCANNED_STR:
        return None
    local = bytes(buf[at:newline + 1])
    if kind == "stringnl_noescape_pair":
        at2, newline2 = reads.readline(MAX_NAME_LINE)
        local += bytes(buf[at2:newline2 + 1])
    return _read_arg(local, info, 0, len(local), False)[0]


# --- 2. policy ---------------------------------------------------------------

TORCH_STORAGE_DTYPES = {
    "DoubleStorage": "F64", "FloatStorage": "F32", "HalfStorage": "F16", "BFloat16Storage": "BF16",
    "LongStorage": "I64", "IntStorage": "I32", "ShortStorage": "I16", "CharStorage": "I8",
    "ByteStorage": "U8", "BoolStorage": "BOOL", "ComplexFloatStorage": "C64",
}
TORCH_DTYPES = {
    "float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16",
    "int64": "I64", "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL",
    "uint16": "U16", "uint32": "U32", "uint64": "U64", "complex64": "C64",
    "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2",
}
# Builtins that only build plain values: referencing or calling one runs no code a file
# chooses (checkpoints pickle sets, slices, ranges, and argparse's type=int in hyper-parameters).
# Every other builtin is dangerous: getattr, eval, exec, __import__, open, compile, globals,
# vars, setattr, delattr, input, breakpoint, type, object, ... `__builtin__` (protocol < 3)
# maps here through fix_imports. The restricted reader maps each to a checked stand-in that
# refuses arguments which would expand memory (list(range(10**18)), bytes(10**12)).
INERT_BUILTINS = frozenset({
    "dict", "list", "tuple", "set", "frozenset", "len", "int", "float", "complex", "bool",
    "str", "bytes", "bytearray", "slice", "range",
})
SAFE_GLOBALS = frozenset({
    "collections.OrderedDict",
    "torch._utils._rebuild_tensor", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor_v3",
    "torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state",
    "torch.storage.UntypedStorage", "torch.Size", "torch.device",
    *(f"torch.{name}" for name in TORCH_STORAGE_DTYPES),
    *(f"torch.{name}" for name in TORCH_DTYPES),
    "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar",
    "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct",
    "numpy.dtype", "numpy.ndarray",
    "_codecs.encode",
    *(f"builtins.{name}" for name in INERT_BUILTINS),
})

# Only explains WHY; anything not in SAFE_GLOBALS is reported either way.
_DANGEROUS_MODULES = {
    "runs shell commands or touches files and processes": (
        "os", "posix", "nt", "subprocess", "_posixsubprocess", "pty", "multiprocessing",
        "concurrent", "signal", "shutil", "tempfile", "io", "_io", "pathlib", "glob",
        "fileinput", "zipfile", "tarfile", "gzip", "bz2", "lzma", "mmap", "fcntl", "resource"),
    "runs Python code": (
        "builtins", "__builtin__", "runpy", "code", "codeop", "pdb", "bdb", "trace", "profile",
        "cProfile", "timeit", "doctest", "idlelib", "IPython", "asyncio", "threading", "_thread",
        "functools", "operator", "_operator", "inspect", "types", "marshal", "gc", "sys",
        "yaml", "jinja2", "logging", "copyreg", "copy_reg", "numpy.f2py", "numpy.distutils", "numpy.testing",
        "numpy.ctypeslib", "tkinter", "turtle"),
    "imports or installs arbitrary modules": (
        "importlib", "pkgutil", "imp", "zipimport", "site", "sysconfig", "pip", "setuptools",
        "distutils", "ensurepip", "venv"),
    "unpickles nested data (runs whatever it contains)": (
        "pickle", "_pickle", "cPickle", "shelve", "dill",
        "cloudpickle", "joblib", "dbm"),
    "calls native code": ("ctypes", "_ctypes", "cffi"),
    "opens network connections or a browser (exfiltration)": (
        "webbrowser", "antigravity", "socket", "_socket", "ssl", "select", "selectors", "http",
        "urllib", "urllib2", "urllib3", "requests", "httpx", "aiohttp", "ftplib", "smtplib",
        "telnetlib", "xmlrpc", "imaplib", "poplib", "nntplib", "socketserver"),
    "torch internals that load, compile or download code": (
        "torch.hub", "torch._inductor", "torch.jit", "torch.utils.collect_env", "torch.serialization",
        "torch.package", "torch._dynamo", "torch.utils.cpp_extension", "torch.distributed",
        "torch.multiprocessing", "torch.ops", "torch.fx", "torch._C", "torch.cuda", "torch.backends",
        "torch.utils.data", "torch.testing", "torch._export", "torch.export", "torch.compiler"),
}
_DANGEROUS_NAMES = {
    "torch.load": "unpickles another file", "torch.save": "writes files",
    "torch.compile": "compiles code", "numpy.load": "loads pickles and files",
    "numpy.save": "writes files", "numpy.fromfile": "reads files", "numpy.memmap": "opens files",
    "numpy.loadtxt": "reads files", "numpy.genfromtxt": "reads files",
}
_MODULE_WHY = {module: why for why, modules in _DANGEROUS_MODULES.items() for module in modules}


def resolve_global(module: str, name: str, *, protocol: int) -> tuple[str, str]:
    """(module, name) as CPython resolves them: fix_imports maps Python 2 names below protocol 3."""
    if protocol < 3:
        if (module, name) in _compat_pickle.NAME_MAPPING:
            return _compat_pickle.NAME_MAPPING[(module, name)]
        return _compat_pickle.IMPORT_MAPPING.get(module, module), name
    return module, name


def classify_global(module: str, name: str) -> tuple[str, str]:
    """(severity, why) for referencing the global `module.name`."""
    full = f"{module}.{name}"
    if full in SAFE_GLOBALS:
        return "safe", "known tensor/container global"
    if "." in name:
        return "dangerous", "dotted name: resolved attribute by attribute, can reach anything"
    if full in _DANGEROUS_NAMES:
        return "dangerous", _DANGEROUS_NAMES[full]
    parts = module.split(".")
    for i in range(len(parts), 0, -1):
        why = _MODULE_WHY.get(".".join(parts[:i]))
        if why:
            return "dangerous", f"{'.'.join(parts[:i])}: {why}"
    return "suspicious", "not in the allowlist (importing its module runs that module's code)"


# --- 3. symbolic walk --------------------------------------------------------

@dataclass(frozen=True)
class _Global:
    module: str
    name: str

    @property
    def full(self) -> str:
        return f"{self.module}.{self.name}"


@dataclass(frozen=True)
class _Made:
    """The result of calling or instantiating something."""
    by: object


_OTHER = object()        # any value whose identity does not matter to the scan
_UNKNOWN_GLOBAL = object()
_STRING_OPS = {"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE",
               "SHORT_BINUNICODE", "BINUNICODE8"}
_PUSH_OTHER = {"INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT",
               "BINFLOAT", "NONE", "NEWTRUE", "NEWFALSE", "BINBYTES", "SHORT_BINBYTES",
               "BINBYTES8", "BYTEARRAY8", "EMPTY_LIST", "EMPTY_TUPLE", "EMPTY_DICT",
               "EMPTY_SET", "PERSID", "NEXT_BUFFER"}
_FROM_MARK = {"LIST", "TUPLE", "DICT", "FROZENSET"}
_MUTATORS = {"APPEND": 1, "SETITEM": 2, "APPENDS": None, "SETITEMS": None, "ADDITEMS": None, "BUILD": 1}


class Memo:
    """The unpickler's memo (PUT/GET/MEMOIZE), bounded in memory.

    Picklers number memo entries 0, 1, 2, ..., so a list holds them at 8 bytes an entry
    (a dict costs ~100: 5M entries would be ~500 MB). Keys at or past MAX_MEMO go to a
    small dict; the scanner reports them (CPython sizes its memo array by the key).
    """
    __slots__ = ("items", "count", "far")
    _EMPTY = object()
    MAX_FAR = 10_000

    def __init__(self) -> None:
        self.items: list = []
        self.count = 0                   # entries set, as CPython's memo_len (MEMOIZE's key)
        self.far: dict[int, object] = {}

    def __len__(self) -> int:
        return self.count

    def put(self, key: int, value, pos: int) -> None:
        if key < 0:
            raise PickleStreamError("negative memo key", pos)
        items = self.items
        if key < len(items):
            if items[key] is Memo._EMPTY:
                self._grow(pos)
            items[key] = value
        elif key < MAX_MEMO:
            self._grow(pos)
            if key > len(items):
                items.extend([Memo._EMPTY] * (key - len(items)))
            items.append(value)
        else:
            if key not in self.far:
                if len(self.far) >= Memo.MAX_FAR:
                    raise PickleLimitError(f"more than {Memo.MAX_FAR} memo keys past {MAX_MEMO}", pos)
                self._grow(pos)
            self.far[key] = value

    def _grow(self, pos: int) -> None:
        if self.count >= MAX_MEMO:
            raise PickleLimitError(f"memo grows past {MAX_MEMO} entries", pos)
        self.count += 1

    def get(self, key: int, pos: int):
        items = self.items
        value = items[key] if 0 <= key < len(items) else self.far.get(key, Memo._EMPTY)
        if value is Memo._EMPTY:
            raise PickleStreamError(f"memo key {key} not found", pos)
        return value


@dataclass
class _Stream:
    """What one pickle (from `start` to STOP or to where it broke) references.

    Findings are deduplicated (the first offset of each is kept) and capped, so a pickle
    that names os.system a million times costs one finding; `dropped` keeps the worst
    severity of those not listed.
    """
    where: str
    base: int                       # offsets in findings are relative to this
    findings: list[Finding] = field(default_factory=list)
    globals: set[str] = field(default_factory=set)
    end: int | None = None          # offset after STOP
    error: PickleStreamError | None = None
    ops: int = 0
    next_starts: set[int] = field(default_factory=set)  # where other readers start the next pickle
    dropped: str | None = None
    _keys: set[tuple] = field(default_factory=set)

    def add(self, severity: str, what: str, pos: int, why: str) -> None:
        key = (severity, what, why)
        if key in self._keys:
            return
        if len(self.findings) >= MAX_FINDINGS:
            if self.dropped is None or _SEVERITY_RANK[severity] > _SEVERITY_RANK[self.dropped]:
                self.dropped = severity
            return
        self._keys.add(key)
        self.findings.append(Finding(severity, what, f"{self.where}@{pos - self.base}", why))

    def extend(self, other: _Stream) -> None:
        """Take the findings and globals of another reading of the same bytes."""
        for f in other.findings:
            key = (f.severity, f.what, f.why)
            if key not in self._keys and len(self.findings) < MAX_FINDINGS:
                self._keys.add(key)
                self.findings.append(f)
        for name in other.globals:
            self.saw(name)
        if other.dropped is not None:
            self.add(other.dropped, "too many findings", self.base, "later ones not listed")

    def saw(self, name: str) -> None:
        if len(self.globals) < MAX_GLOBALS_SEEN:
            self.globals.add(name)


class _Walker:
    def __init__(self, stream: _Stream, *, why_suffix: str = ""):
        self.s = stream
        self.stack: list = []
        self.metastack: list[list] = []
        self.below = 0                  # values held by the stacks under the MARKs
        self.memo = Memo()
        self.protocol = 0
        self.why_suffix = why_suffix    # says which reader's reading a finding comes from

    def add(self, severity: str, what: str, pos: int, why: str) -> None:
        self.s.add(severity, what, pos, why + self.why_suffix)

    def check_stack(self, pos: int) -> None:
        if self.below + len(self.stack) > MAX_STACK:
            raise PickleLimitError(f"more than {MAX_STACK} values on the stack", pos)

    def pop(self, pos: int):
        if not self.stack:
            raise PickleStreamError("stack underflow", pos)
        return self.stack.pop()

    def pop_mark(self, pos: int) -> list:
        if not self.metastack:
            raise PickleStreamError("no MARK to pop to", pos)
        items, self.stack = self.stack, self.metastack.pop()
        self.below -= len(self.stack)
        return items

    def top(self, pos: int):
        if not self.stack:
            raise PickleStreamError("stack underflow", pos)
        return self.stack[-1]

    def memoize(self, key: int, pos: int) -> None:
        if key >= MAX_MEMO:
            self.add("dangerous", f"memo index {key}", pos,
                     "CPython sizes its memo array by the index: a memory-exhaustion attack on the loader")
        self.memo.put(key, self.top(pos), pos)

    def reference(self, module, name, op: str, pos: int):
        if not isinstance(module, str) or not isinstance(name, str):
            self.add("dangerous", f"{op} with operands not statically known", pos,
                     "the imported name is computed at load time, so it cannot be checked")
            return _UNKNOWN_GLOBAL
        module, name = resolve_global(module, name, protocol=self.protocol)
        found = _Global(module, name)
        self.s.saw(found.full)
        severity, why = classify_global(module, name)
        if severity != "safe":
            self.add(severity, found.full, pos, why)
        return found

    def call(self, callee, op: str, pos: int) -> _Made:
        if callee is _UNKNOWN_GLOBAL:
            pass  # already reported as dangerous
        elif not isinstance(callee, _Global):
            self.add("dangerous", f"{op} on a value computed at load time", pos,
                     "calls something that is not a statically known global")
        else:
            severity, _ = classify_global(callee.module, callee.name)
            if severity == "suspicious" and op != "NEWOBJ":
                self.add("dangerous", f"{op} {callee.full}", pos,
                         "calls an unknown global with arguments (runs its code)")
        return _Made(callee)

    def mutate(self, target, op: str, pos: int) -> None:
        if isinstance(target, _Global) or target is _UNKNOWN_GLOBAL:
            name = target.full if isinstance(target, _Global) else "an unknown global"
            self.add("dangerous", f"{op} on {name}", pos,
                     "changes a module, class or function in the loading process")

    def step(self, op: str, arg, pos: int) -> None:  # noqa: C901 - one branch per opcode family
        if op in _STRING_OPS:
            self.stack.append(arg if arg is not None else _OTHER)
        elif op in _PUSH_OTHER:
            self.stack.append(_OTHER)
        elif op == "MARK":
            if len(self.metastack) >= MAX_MARK_DEPTH:
                raise PickleLimitError("MARKs nested too deep", pos)
            self.below += len(self.stack)
            self.metastack.append(self.stack)
            self.stack = []
            self.check_stack(pos)
        elif op in _FROM_MARK:
            self.pop_mark(pos)
            self.stack.append(_OTHER)
        elif op in ("TUPLE1", "TUPLE2", "TUPLE3"):
            for _ in range(int(op[-1])):
                self.pop(pos)
            self.stack.append(_OTHER)
        elif op in _MUTATORS:
            count = _MUTATORS[op]
            if count is None:
                self.pop_mark(pos)
            else:
                for _ in range(count):
                    self.pop(pos)
            self.mutate(self.top(pos), op, pos)
        elif op == "POP":
            if self.stack:
                self.stack.pop()
            else:
                self.pop_mark(pos)
        elif op == "POP_MARK":
            self.pop_mark(pos)
        elif op == "DUP":
            self.stack.append(self.top(pos))
        elif op in ("GET", "BINGET", "LONG_BINGET"):
            key = parse_memo_key(arg, pos) if op == "GET" else arg
            self.stack.append(self.memo.get(key, pos))
        elif op in ("PUT", "BINPUT", "LONG_BINPUT"):
            self.memoize(parse_memo_key(arg, pos) if op == "PUT" else arg, pos)
        elif op == "MEMOIZE":
            self.memoize(len(self.memo), pos)
        elif op == "GLOBAL":
            self.stack.append(self.reference(arg[0], arg[1], op, pos))
        elif op == "STACK_GLOBAL":
            name, module = self.pop(pos), self.pop(pos)
            self.stack.append(self.reference(module, name, op, pos))
        elif op == "INST":
            callee = self.reference(arg[0], arg[1], op, pos)
            self.pop_mark(pos)
            self.stack.append(self.call(callee, op, pos))
        elif op == "OBJ":
            items = self.pop_mark(pos)
            if not items:
                raise PickleStreamError("OBJ without a class", pos)
            self.stack.append(self.call(items[0], op, pos))
        elif op in ("REDUCE", "NEWOBJ"):
            self.pop(pos)
            self.stack.append(self.call(self.pop(pos), op, pos))
        elif op == "NEWOBJ_EX":
            self.pop(pos)
            self.pop(pos)
            self.stack.append(self.call(self.pop(pos), "NEWOBJ", pos))
        elif op in ("EXT1", "EXT2", "EXT4"):
            self.add("dangerous", f"{op} {arg}", pos,
                     "extension-registry code: the global depends on the loading process")
            self.stack.append(_UNKNOWN_GLOBAL)
        elif op == "BINPERSID":
            self.pop(pos)
            self.stack.append(_OTHER)
        elif op == "PROTO":
            if arg > HIGHEST_PICKLE_PROTOCOL:
                raise PickleStreamError(f"unsupported pickle protocol {arg}", pos)
            self.protocol = arg
        elif op == "STOP":
            self.pop(pos)
        # FRAME (bounds checked by the decoder) and READONLY_BUFFER change nothing we track


def scan_stream(buf, *, start: int = 0, end: int | None = None, where: str = "",
                base: int | None = None) -> _Stream:
    """Walk one pickle starting at `start`; never raises for bad input.

    Offsets in findings are relative to `base` (default `start`): the entry or file start.
    FRAME anomalies are findings, and the walk goes as far as any reader would: on past a
    FRAME longer than the data (pickle.py reads on), and, when an opcode crosses a frame's
    end, once more as _pickle.c reads a file (it skips the rest of the frame).
    """
    end = len(buf) if end is None else end
    stream = _Stream(where, start if base is None else base)
    frames = FrameCheck(end, strict=False, base=stream.base)
    _walk(iter_ops(buf, start=start, end=end, max_ops=MAX_OPS, frames=frames), _Walker(stream), stream)
    for anomaly in frames.anomalies:
        stream.add("dangerous", anomaly.what, anomaly.pos, anomaly.why)
    stream.next_starts |= frames.next_starts
    if frames.c_file_differs:
        _walk_c_file_reading(buf, start, end, stream)
    return stream


def _walk(ops: Iterator[tuple[str, object, int]], walker: _Walker, stream: _Stream) -> None:
    try:
        for op, arg, pos in ops:
            stream.ops += 1
            walker.step(op, arg, pos)
            if op == "STOP":
                stream.end = pos + 1
            elif not stream.ops & 0xFFFF:
                walker.check_stack(pos)
    except PickleStreamError as exc:
        stream.error = exc


def _walk_c_file_reading(buf, start: int, end: int, stream: _Stream) -> None:
    """Walk the pickle as _pickle.c reads it from a file; its findings join `stream`'s."""
    reads = _CFileReads(buf, start, end)
    other = _Stream(stream.where, stream.base)
    walker = _Walker(other, why_suffix=" (as _pickle.c reads it from a file)")
    _walk(_iter_ops_c_file(buf, start=start, end=end, reads=reads), walker, other)
    if not reads.skipped:
        return  # it read every byte in order: the same pickle
    first, last = reads.skipped[0]
    stream.add("dangerous", "pickle readers disagree", first,
               f"_pickle.c reading this from a file skips {_bytes(last - first)} at byte {first - stream.base} "
               "(the rest of a FRAME) and so runs other opcodes than pickle.py or a byte-by-byte "
               "reading: each loader can be shown a different pickle")
    stream.extend(other)
    if other.end is not None and reads.buffered_to != stream.end:
        stream.next_starts.add(reads.buffered_to)


# --- 4. every pickle in a file -----------------------------------------------

class _Report:
    """Findings of a whole file, deduplicated (one per what/entry/why) and capped."""

    def __init__(self) -> None:
        self.findings: list[Finding] = []
        self.globals: set[str] = set()
        self.worst = "safe"
        self._keys: set[tuple] = set()
        self._capped = False

    def add(self, severity: str, what: str, where: str, why: str) -> None:
        if _SEVERITY_RANK[severity] > _SEVERITY_RANK[self.worst]:
            self.worst = severity
        key = (severity, what, where.rsplit("@", 1)[0], why)
        if key in self._keys:
            return
        if len(self.findings) < MAX_FINDINGS:
            self._keys.add(key)
            self.findings.append(Finding(severity, what, where, why))
        elif not self._capped:
            self._capped = True
            self.findings.append(Finding("suspicious", "too many findings", where, "later ones not listed"))

    def merge(self, stream: _Stream) -> None:
        for name in stream.globals:
            if len(self.globals) >= MAX_GLOBALS_SEEN:
                break
            self.globals.add(name)
        for f in stream.findings:
            self.add(f.severity, f.what, f.where, f.why)
        if stream.dropped is not None:
            self.add(stream.dropped, "too many findings", stream.where, "later ones not listed")

    def result(self) -> SafetyReport:
        return SafetyReport(self.worst, tuple(self.findings), tuple(sorted(self.globals)))


def scan_pickle_bytes(data: bytes, *, where: str) -> list[Finding]:
    """Findings for every consecutive pickle in `data` (empty list: only allowlisted globals)."""
    report = _Report()
    _scan_chain(data, 0, len(data), where, report, required=1)
    return report.findings


def scan_path(path: str | os.PathLike) -> SafetyReport:
    """Scan every pickle a loader could reach in the file at `path`.

    Raises ModelFileError only if the path cannot be read (or is a directory).
    """
    p = Path(path)
    if p.is_dir():
        raise ModelFileError(f"{p} is a directory: scan its files one by one")
    fmt = sniff(p)
    report = _Report()
    with _mapped(p) as buf:
        if len(buf) == 0:
            report.add("unreadable", "empty file", p.name, "nothing to analyse")
        elif fmt in ("torch-zip", "npz", "zip"):
            _scan_zip(buf, fmt, report)
        else:
            _scan_flat_file(buf, fmt, p, report)
    return report.result()


def _scan_flat_file(buf, fmt: str, path: Path, report: _Report) -> None:
    where = path.name
    # torch.load unpickles any non-zip file from byte 0 (after trying tar), so every
    # format gets that walk; only pickle formats must parse there.
    required = {"pickle": 1, "torch-legacy": 5}.get(fmt, 0)  # legacy: magic, protocol, sys_info, object, keys
    if _scan_chain(buf, 0, len(buf), where, report, required=required) and not required:
        report.add("dangerous", f"pickle at byte 0 of a {fmt} file", where,
                   "torch.load would unpickle it: a polyglot file")
    if fmt == "npy":
        _scan_npy(buf, 0, len(buf), where, report)
    elif fmt == "7z":
        report.add("dangerous", "7z archive", where,
                   "its contents cannot be inspected without unpacking; it may wrap a pickle a loader unpacks")
    elif fmt == "torch-tar" or _opens_as_tar(path):  # torch tries tarfile on every non-zip file
        _scan_tar(buf, path, report)
    elif fmt == "unknown" and report.worst == "safe":
        report.add("unreadable", "unrecognised content", where, describe_unknown(bytes(buf[:HEAD_BYTES]), size=len(buf)))


def _scan_chain(buf, start: int, end: int, where: str, report: _Report, *, required: int) -> bool:
    """Scan consecutive pickles from `start`. The first `required` must parse (else
    "unreadable"); later bytes may just be data, so their findings count only with
    evidence of a real payload. Where FRAME tricks make readers disagree about where the
    next pickle starts, both starts are scanned. Returns True if any stream's findings were kept."""
    kept = False
    todo = [(start, 0, False)]  # (offset, index in the chain, reached only by another reader)
    # Every next start lies after the current one, so there are no cycles; `seen` only stops
    # two readings that meet again from being scanned twice (kept only once readings fork).
    seen: set[int] | None = None
    forks = 0
    while todo:
        pos, count, other_reader = todo.pop()
        if pos >= end or (seen is not None and pos in seen):
            continue
        if seen is not None:
            seen.add(pos)
        stream = scan_stream(buf, start=pos, end=end, where=where, base=start)
        must_parse = count < required and not other_reader
        evidence = _has_evidence(stream) or (other_reader and bool(stream.findings))
        if must_parse or evidence:
            report.merge(stream)
            kept = kept or bool(stream.findings)
        error = stream.error
        for other in sorted(stream.next_starts):
            if forks < MAX_FINDINGS:  # already dangerous; enough readings to name what they hide
                forks += 1
                seen = seen if seen is not None else set()
                todo.append((other, count + 1, True))
        if error is not None:
            at = f"{where}@{error.pos - start}"
            if isinstance(error, PickleLimitError) and (must_parse or evidence or buf[pos] == 0x80):
                report.add("dangerous", "pickle too large to analyse", at, f"{error}: the rest is unchecked")
                kept = True
            elif must_parse:
                report.add("unreadable", "broken pickle", at, str(error))
            continue
        todo.append((stream.end, count + 1, other_reader))
    return kept


def _has_evidence(stream: _Stream) -> bool:
    """Random tensor bytes decode as a few opcodes now and then; an importable global does not."""
    return any(all(part.isidentifier() for part in name.split(".")) for name in stream.globals)


@contextmanager
def _mapped(path: Path):
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                yield b""
                return
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                yield mm
    except OSError as exc:
        raise ModelFileError(f"cannot read {path}: {exc}") from exc


# --- zip ---

_ALLOWED_ZIP_FLAGS = 0x0002 | 0x0004 | 0x0008 | 0x0800  # deflate options, data descriptor, utf-8


def _scan_zip(buf, fmt: str, report: _Report) -> None:
    try:
        entries = read_zip_directory(buf)
    except ModelFileError as exc:
        report.add("unreadable", "zip directory", "zip", str(exc))
        return
    seen: set[str] = set()
    for entry in entries:
        if entry.name in seen:
            report.add("dangerous", "duplicate zip entry", entry.name,
                       "torch reads the first copy, Python's zipfile the last: each can be shown a different file")
        seen.add(entry.name)
        _scan_zip_entry(buf, entry, report)
    if fmt == "zip" and report.worst == "safe":
        report.add("unreadable", "zip without a torch pickle or arrays", "zip",
                   "not a model container we can analyse")


def _scan_zip_entry(buf, entry: ZipEntry, report: _Report) -> None:
    where = entry.name
    if entry.flags & ~_ALLOWED_ZIP_FLAGS:
        report.add("dangerous", f"zip entry flags {entry.flags:#06x}", where,
                   "encrypted or unusual entries cannot be checked the way a loader reads them")
        if entry.flags & 0x0041:  # encrypted: nothing readable to scan
            return
    if entry.method not in (0, 8):
        report.add("dangerous", f"zip compression method {entry.method}", where, "we cannot inflate it to check it")
        return
    try:
        local = read_zip_local(buf, entry)
        head = read_zip_entry(buf, entry, local.data_offset, limit=4096)
    except ModelFileError as exc:
        report.add("unreadable", "zip entry", where, str(exc))
        return
    if local.name != entry.name:
        report.add("dangerous", "zip local/central name mismatch", where,
                   f"the local header says {local.name!r}: readers disagree about which file this is")
    if entry.name.endswith(".py") or "/code/" in f"/{entry.name}":
        report.add("dangerous", "TorchScript or Python code", where, "code that a loader compiles or imports")
    if entry.name.endswith(".npy") or head.startswith(NPY_MAGIC):
        _scan_zipped_npy(buf, entry, local.data_offset, report)
    elif entry.name.endswith(".pkl"):
        data = _entry_data(buf, entry, local.data_offset, where, report)
        if data is not None:
            if _crc32(*data) != entry.crc32:
                report.add("suspicious", "zip CRC mismatch", where,
                           "the entry was altered after zipping (torch ignores CRCs; we scanned its bytes)")
            _scan_chain(*data, where, report, required=1)
    elif looks_like_pickle(head):
        data = _entry_data(buf, entry, local.data_offset, where, report)
        if data is not None and _scan_chain(*data, where, report, required=0):
            report.add("dangerous", "pickle under a non-pickle name", where,
                       "a loader or tool may unpickle it; names are not evidence")


def _scan_zipped_npy(buf, entry: ZipEntry, data_offset: int, report: _Report) -> None:
    if entry.method == 8:  # numeric arrays need only their header: inflate the rest only for a pickle
        try:
            head = read_zip_entry(buf, entry, data_offset, limit=MAX_NPY_HEADER + 12)
            if not read_npy_header(head).dtype.hasobject:
                return
        except ModelFileError:
            pass  # _scan_npy below reports it on the full entry
    data = _entry_data(buf, entry, data_offset, entry.name, report)
    if data is not None:
        _scan_npy(*data, entry.name, report)


def _entry_data(buf, entry: ZipEntry, data_offset: int, where: str, report: _Report):
    """(buffer, start, end) of the entry's content: stored entries in place in the file,
    deflated ones inflated, unless they are (or turn out) larger than MAX_INFLATE."""
    if entry.method == 0:
        return buf, data_offset, data_offset + entry.compressed_size
    if entry.size > MAX_INFLATE:  # as declared: nothing inflated
        report.add("dangerous", "zip entry too large to inflate", where,
                   f"it declares {entry.size} bytes, more than the {MAX_INFLATE} we inflate to analyse: not analysed")
        return None
    try:  # a header may lie: the running cap stops the inflating, not the declared size
        data = read_zip_entry(buf, entry, data_offset, limit=MAX_INFLATE + 1)
    except ModelFileError as exc:
        report.add("unreadable", "zip entry", where, str(exc))
        return None
    if len(data) > MAX_INFLATE:
        report.add("dangerous", "zip entry too large to inflate", where,
                   f"it declares {entry.size} bytes but inflates to more than {MAX_INFLATE}: not analysed")
        return None
    return data, 0, len(data)


def _crc32(buf, start: int, end: int) -> int:
    with memoryview(buf) as view:
        return zlib.crc32(view[start:end])


# --- npy and tar ---

def _scan_npy(buf, start: int, end: int, where: str, report: _Report) -> None:
    try:
        header = read_npy_header(buf, start=start, end=end)
    except ModelFileError as exc:
        report.add("unreadable", "npy header", where, str(exc))
        return
    if not header.dtype.hasobject:
        return
    report.add("suspicious", f"npy array of dtype {header.descr!r}", where,
               "object arrays are pickles: loading needs allow_pickle=True (its pickle is scanned)")
    _scan_chain(buf, header.data_offset, end, f"{where}[object array pickle]", report, required=1)


def _opens_as_tar(path: Path) -> bool:
    try:
        with tarfile.open(path, "r:") as tar:
            return tar.next() is not None
    except (tarfile.TarError, OSError, ValueError, EOFError, UnicodeError):
        return False


def _scan_tar(buf, path: Path, report: _Report) -> None:
    """Scan each member's pickles. torch's tar layout interleaves record pickles with raw
    bytes in `storages`/`tensors`; we do not follow those records, so the file is never safe."""
    try:
        with tarfile.open(path, "r:") as tar:
            members = [m for m in tar.getmembers() if m.isfile()]
    except (tarfile.TarError, OSError, ValueError, EOFError, UnicodeError) as exc:
        report.add("unreadable", "tar", path.name, f"not a readable tar: {exc}")
        return
    for member in members:
        start = member.offset_data
        end = min(start + member.size, len(buf))
        where = f"{path.name}:{member.name}"
        _scan_chain(buf, start, end, where, report, required=int(member.name in ("pickle", "sys_info")))
    report.add("dangerous", "torch tar checkpoint", path.name,
               "its storages/tensors records mix pickles with raw bytes we do not follow: not fully analysed")
