"""Find what a pickle would import and call, without ever unpickling it.

Three parts, read top to bottom:
1. The policy: an allowlist of globals a weights file needs; a deny table that
   only explains WHY something outside it is dangerous.
2. The symbolic hook of the opcode machine (pickle_machine: decoding, FRAMEs, stack,
   MARKs, memo, shared with the restricted reader): values are what the scan needs to
   know of them, so every GLOBAL / STACK_GLOBAL / INST operand is resolved, even when
   fetched from the memo past decoys, and calls and mutations are noticed. A pickle
   whose FRAMEs readers disagree on is walked again as _pickle.c reads a file.
3. `scan_path`, which finds every pickle in a file: zip entries by content,
   consecutive pickles, tails, tar members, .npy object arrays, and pickles hiding at
   byte 0 of other formats.

PURE: no Django, no torch; nothing here imports a name read from a file.
"""
from __future__ import annotations

import mmap
import os
import tarfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from workers.modelfiles.pickle_machine import (  # the decoder's names are imported from here too
    MAX_MARK_DEPTH as MAX_MARK_DEPTH, MAX_MEMO, MAX_OPS, MAX_STACK, FrameCheck, Memo as Memo, PickleLimitError,
    PickleMachine, PickleStreamError, PickleTruncated as PickleTruncated, CFileReads, count_bytes, iter_ops,
    iter_ops_c_file, parse_memo_key as parse_memo_key, resolve_global as resolve_global,
)
from workers.modelfiles.sniff import (
    HEAD_BYTES, MAX_NPY_HEADER, NPY_MAGIC, ZipEntry, describe_unknown,
    looks_like_pickle, read_npy_header, read_zip_directory, read_zip_entry, read_zip_local, sniff,
)
from workers.modelfiles.types import Finding, ModelFileError, SafetyReport

# Largest deflated zip entry we inflate (in memory) to scan it. torch never deflates its
# entries; re-zipped checkpoints have data.pkl files of a few MB. Bigger entries, declared or
# found while inflating, are reported as too large to analyse instead of costing memory.
MAX_INFLATE = 128 << 20
MAX_FINDINGS = 200
MAX_GLOBALS_SEEN = 10_000     # distinct names listed per file; real checkpoints use a few dozen
_SEVERITY_RANK = {"safe": 0, "suspicious": 1, "unreadable": 2, "dangerous": 3}
_iter_ops_c_file = iter_ops_c_file  # the name the FRAME tests know it by


# --- 1. policy ---------------------------------------------------------------

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


# --- 2. symbolic hook --------------------------------------------------------

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


class _Symbolic:
    """The machine's symbolic hook: a value is a `_Global`, the `_Made` result of calling
    one, a string the pickle spells out, or `_OTHER`. Globals are listed and classified;
    calling an unknown global, a computed callee, or mutating a global are findings.
    Nothing is refused: the walk goes as far as CPython would."""
    refused = frozenset()

    def __init__(self, stream: _Stream, *, why_suffix: str = ""):
        self.s = stream
        self.why_suffix = why_suffix    # says which reader's reading a finding comes from

    def add(self, severity: str, what: str, pos: int, why: str) -> None:
        self.s.add(severity, what, pos, why + self.why_suffix)

    def literal(self, op: str, arg, pos: int):
        # Text is the only literal a global can be built from (STACK_GLOBAL); the decoder
        # hands text as str (None past MAX_SCANNED_STR), numbers and bytes as other types.
        return arg if type(arg) is str else _OTHER

    def collect(self, op: str, items: list, pos: int):
        return _OTHER

    def add_to(self, op: str, target, items: list, pos: int) -> None:
        self._mutate(target, op, pos)

    def build(self, target, state, pos: int) -> None:
        self._mutate(target, "BUILD", pos)

    def find(self, module: str, name: str, op: str, pos: int):
        found = _Global(module, name)
        self.s.saw(found.full)
        severity, why = classify_global(module, name)
        if severity != "safe":
            self.add(severity, found.full, pos, why)
        return found

    def computed_global(self, op: str, pos: int):
        self.add("dangerous", f"{op} with operands not statically known", pos,
                 "the imported name is computed at load time, so it cannot be checked")
        return _UNKNOWN_GLOBAL

    def call(self, op: str, callee, args, kwargs, pos: int) -> _Made:
        op = "NEWOBJ" if op == "NEWOBJ_EX" else op
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

    def persistent(self, op: str, pid, pos: int):
        return _OTHER

    def extension(self, op: str, code: int, pos: int):
        self.add("dangerous", f"{op} {code}", pos, "extension-registry code: the global depends on the loading process")
        return _UNKNOWN_GLOBAL

    def buffer(self, op: str, pos: int):
        return _OTHER

    def memo_key(self, key: int, pos: int) -> None:
        if key >= MAX_MEMO:
            self.add("dangerous", f"memo index {key}", pos,
                     "CPython sizes its memo array by the index: a memory-exhaustion attack on the loader")

    def refuse(self, op: str, pos: int):
        raise AssertionError("the scanner refuses no opcode")

    def _mutate(self, target, op: str, pos: int) -> None:
        if isinstance(target, _Global) or target is _UNKNOWN_GLOBAL:
            name = target.full if isinstance(target, _Global) else "an unknown global"
            self.add("dangerous", f"{op} on {name}", pos,
                     "changes a module, class or function in the loading process")


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
    _walk(iter_ops(buf, start=start, end=end, max_ops=MAX_OPS, frames=frames), _Symbolic(stream), stream)
    for anomaly in frames.anomalies:
        stream.add("dangerous", anomaly.what, anomaly.pos, anomaly.why)
    stream.next_starts |= frames.next_starts
    if frames.c_file_differs:
        _walk_c_file_reading(buf, start, end, stream)
    return stream


def _walk(ops: Iterator[tuple[str, object, int]], hook: _Symbolic, stream: _Stream) -> None:
    try:
        _, stream.end = PickleMachine(hook, max_stack=MAX_STACK).run(ops)
    except PickleStreamError as exc:
        stream.error = exc


def _walk_c_file_reading(buf, start: int, end: int, stream: _Stream) -> None:
    """Walk the pickle as _pickle.c reads it from a file; its findings join `stream`'s."""
    reads = CFileReads(buf, start, end)
    other = _Stream(stream.where, stream.base)
    hook = _Symbolic(other, why_suffix=" (as _pickle.c reads it from a file)")
    _walk(iter_ops_c_file(buf, start=start, end=end, max_ops=MAX_OPS, reads=reads), hook, other)
    if not reads.skipped:
        return  # it read every byte in order: the same pickle
    first, last = reads.skipped[0]
    stream.add("dangerous", "pickle readers disagree", first,
               f"_pickle.c reading this from a file skips {count_bytes(last - first)} at byte {first - stream.base} "
               "(the rest of a FRAME) and so runs other opcodes than pickle.py or a byte-by-byte "
               "reading: each loader can be shown a different pickle")
    stream.extend(other)
    if other.end is not None and reads.buffered_to != stream.end:
        stream.next_starts.add(reads.buffered_to)


# --- 3. every pickle in a file -----------------------------------------------

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

