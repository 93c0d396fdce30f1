"""One pickle opcode machine for the scanner and the restricted reader.

The scanner (pickle_scan) and the reader (restricted_pickle) must agree on what a pickle
does: which bytes are which opcode, where FRAMEs end, what the memo holds, which value a
MARK, POP or STACK_GLOBAL reaches, how protocol < 3 names resolve. Both run this module:
1. decoding: `iter_ops` reads opcodes byte by byte with their arguments and FRAME checks
   (`FrameCheck`), bounded; `iter_ops_c_file` reads them as _pickle.c reads a file object.
2. `Memo`: the unpickler's memo, bounded.
3. `PickleMachine`: stack, MARKs, memo and protocol as CPython's unpickler keeps them,
   with caps on opcodes, stack, MARK depth and (optionally) values made. The machine only
   moves values; a hook makes them: the scanner's symbolic hook (what a value refers to,
   findings) or the reader's inert hook (allowlisted stand-ins, everything else refused).

It is never stricter than CPython: if we stop at a byte, CPython stops there too.
PURE: no Django, no torch; nothing here imports a name read from a file.
"""
from __future__ import annotations

import _compat_pickle
import codecs
import pickletools
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NoReturn, Protocol

from workers.modelfiles.sniff import HIGHEST_PICKLE_PROTOCOL
from workers.modelfiles.types import INCOMPLETE, ModelFileError, TruncatedFileError

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
MAX_ANOMALIES = 200            # FRAME anomalies kept per pickle (each is already dangerous)


# --- 1. decoding --------------------------------------------------------------

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
      rest away and reads from the file after the frame: another pickle (`iter_ops_c_file`).
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
        if len(self.anomalies) < MAX_ANOMALIES:
            self.anomalies.append(FrameAnomaly(pos, what, why))

    def step(self, code: int, name: str, arg, pos: int, next_pos: int) -> None:
        end = self.end
        if end is not None:
            if pos >= end:        # used up: pickle.py reads on from the data after the frame
                self.end = end = None
            elif next_pos > end:
                self._anomaly(pos, "opcode straddles a FRAME boundary",
                              f"{name} at byte {pos - self.base} reads {count_bytes(next_pos - end)} past the end "
                              f"of its FRAME (byte {end - self.base}): pickle.py refuses it, and _pickle.c "
                              "reading a file skips the rest of the frame and reads other bytes as this argument")
                self.c_file_differs = True
                self.end = end = None
        if code == _FRAME:
            remaining = self.data_end - next_pos
            if end is not None and next_pos < end:
                self._anomaly(pos, "FRAME inside a FRAME",
                              f"a new FRAME starts {count_bytes(end - next_pos)} before the current one ends: "
                              "pickle.py refuses it, and _pickle.c reading a file may skip those bytes")
                self.c_file_differs = True
            if arg > remaining:
                self._anomaly(pos, "FRAME longer than the data",
                              f"the FRAME claims {count_bytes(arg)} but only {remaining} remain: _pickle.c stops "
                              "here while pickle.py reads on (and imports what follows)")
                self.end = self.data_end
            else:
                self.end = next_pos + arg
        elif code == _STOP and end is not None and end > next_pos:
            self._anomaly(pos, "FRAME runs past STOP",
                          f"the pickle stops {count_bytes(end - next_pos)} before its FRAME ends: loaders disagree "
                          "about where the next pickle in the file starts")
            self.next_starts.add(end)


def count_bytes(n: int) -> str:
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

class CFileReads:
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


def iter_ops_c_file(buf, *, start: int, end: int, max_ops: int = MAX_OPS,
                     reads: CFileReads | None = None) -> Iterator[tuple[str, object, int]]:
    """Like `iter_ops` (scanner arguments only), but as `CFileReads` says _pickle.c reads a file."""
    reads = reads or CFileReads(buf, start, end)
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


def _c_file_arg(buf, info, reads: CFileReads):
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



def resolve_global(module: str, name: str, *, protocol: int) -> tuple[str, str]:
    """(module, name) as CPython resolves them: fix_imports maps Python 2 names below protocol 3."""
    if protocol < 3:
        if (module, name) in _compat_pickle.NAME_MAPPING:
            return _compat_pickle.NAME_MAPPING[(module, name)]
        return _compat_pickle.IMPORT_MAPPING.get(module, module), name
    return module, name



# --- 2. memo -------------------------------------------------------------------


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




# --- 3. the machine -------------------------------------------------------------

class Hook(Protocol):
    """What the values are. The machine moves values (stack, MARKs, memo); a hook makes them.

    Each method gets the opcode's name and its offset; names reach `find` as CPython
    resolves them. The opcodes in `refused` are not run: the machine hands them to `refuse`,
    which raises.
    """
    refused: frozenset[str]

    def literal(self, op: str, arg, pos: int):
        """The value of a numbers/text/bytes/None/bool opcode or an EMPTY_* container (`arg` as decoded)."""

    def collect(self, op: str, items: list, pos: int):
        """LIST, TUPLE, DICT, FROZENSET of the items since the MARK; TUPLE1-3 of the top items."""

    def add_to(self, op: str, target, items: list, pos: int) -> None:
        """APPEND, APPENDS, SETITEM, SETITEMS (items: key, value, ...), ADDITEMS into `target`."""

    def build(self, target, state, pos: int) -> None:
        """BUILD: `state` set on `target`."""

    def find(self, module: str, name: str, op: str, pos: int):
        """The global `module.name` (GLOBAL, STACK_GLOBAL, INST's class)."""

    def computed_global(self, op: str, pos: int):
        """STACK_GLOBAL whose operands are not strings: the name is computed at load time."""

    def call(self, op: str, callee, args, kwargs, pos: int):
        """REDUCE, NEWOBJ, NEWOBJ_EX (with `kwargs`, else None), INST, OBJ: `callee(*args)`."""

    def persistent(self, op: str, pid, pos: int):
        """PERSID (`pid` is its line) or BINPERSID: what the persistent id stands for."""

    def extension(self, op: str, code: int, pos: int):
        """EXT1/2/4: the global copyreg's extension registry holds under `code`."""

    def buffer(self, op: str, pos: int):
        """NEXT_BUFFER's value (out-of-band); READONLY_BUFFER (result unused)."""

    def memo_key(self, key: int, pos: int) -> None:
        """PUT/BINPUT/LONG_BINPUT/MEMOIZE is about to store at `key`."""

    def refuse(self, op: str, pos: int) -> NoReturn:
        """Raise: `op` is in `refused`."""


_LITERAL_OPS = frozenset({
    "STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8",
    "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT", "BINFLOAT",
    "NONE", "NEWTRUE", "NEWFALSE", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8",
    "EMPTY_LIST", "EMPTY_TUPLE", "EMPTY_DICT", "EMPTY_SET",
})
# Opcodes that make a new value (small ints, None and booleans are shared objects, and
# GET/DUP/GLOBAL hand out existing ones): what `max_values` counts.
MAKES_A_VALUE = frozenset({
    "STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8",
    "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8", "BININT", "BININT2", "LONG1", "LONG4",
    "BINFLOAT", "INT", "LONG", "FLOAT", "EMPTY_LIST", "EMPTY_TUPLE", "EMPTY_DICT", "EMPTY_SET",
    "LIST", "TUPLE", "DICT", "FROZENSET", "TUPLE1", "TUPLE2", "TUPLE3", "REDUCE", "NEWOBJ",
    "NEWOBJ_EX", "BINPERSID", "MARK",
})
_STACK_CHECK_EVERY = 0xFFFF  # opcodes between stack-size checks (MARK checks too)


class PickleMachine:
    """CPython's unpickler (Lib/pickle.py `_Unpickler`, Modules/_pickle.c) as a state machine.

    `run` takes the opcodes of `iter_ops` (or `iter_ops_c_file`) up to STOP and keeps the
    stack, the MARKs (a stack per MARK, as pickle.py's metastack), the memo and the protocol.
    Structural errors (underflow, a missing MARK or memo key) raise PickleStreamError where
    CPython raises too; our caps raise PickleLimitError: the stack (`max_stack` values over all
    MARK levels), MARK depth, memo (`Memo`), and, if given, `max_values` values made.
    """

    def __init__(self, hook: Hook, *, max_stack: int = MAX_STACK, max_values: int | None = None):
        self.hook = hook
        self.stack: list = []
        self.metastack: list[list] = []
        self.below = 0                  # values held by the stacks under the MARKs
        self.memo = Memo()
        self.protocol = 0
        self.max_stack = max_stack
        self.max_values = max_values
        self.values_left = max_values
        self._handlers = self._dispatch_table()

    def run(self, ops: Iterator[tuple[str, object, int]]) -> tuple[object, int]:
        """Run opcodes to STOP: (the value STOP pops, offset after STOP)."""
        handlers = self._handlers
        count = 0
        pos = 0
        for op, arg, pos in ops:
            count += 1
            if op == "STOP":
                return self.pop(pos), pos + 1
            handlers[op](op, arg, pos)
            if not count & _STACK_CHECK_EVERY:
                self.check_stack(pos)
        raise PickleStreamError("pickle ends without STOP", pos)  # iter_ops raises first

    # --- the stack ---

    def check_stack(self, pos: int) -> None:
        if self.below + len(self.stack) > self.max_stack:
            raise PickleLimitError(f"more than {self.max_stack} values on the stack", pos)

    def pop(self, pos: int):
        if not self.stack:
            raise PickleStreamError("stack underflow", pos)
        return self.stack.pop()

    def top(self, pos: int):
        if not self.stack:
            raise PickleStreamError("stack underflow", pos)
        return self.stack[-1]

    def pop_mark(self, pos: int) -> list:
        if not self.metastack:
            raise PickleStreamError("no MARK to pop to", pos)
        items, self.stack = self.stack, self.metastack.pop()
        self.below -= len(self.stack)
        return items

    # --- one handler per opcode family; `self.stack.append`, never a bound copy: MARK replaces the list ---

    def _dispatch_table(self) -> dict[str, Callable[[str, object, int], None]]:
        table: dict[str, Callable[[str, object, int], None]] = dict.fromkeys(_LITERAL_OPS, self._literal)
        table.update(dict.fromkeys(("LIST", "TUPLE", "DICT", "FROZENSET"), self._collect_mark))
        table.update(dict.fromkeys(("TUPLE1", "TUPLE2", "TUPLE3"), self._collect_top))
        table.update(dict.fromkeys(("APPENDS", "SETITEMS", "ADDITEMS"), self._add_marked))
        table.update(dict.fromkeys(("GET", "BINGET", "LONG_BINGET"), self._get))
        table.update(dict.fromkeys(("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"), self._put))
        table.update(dict.fromkeys(("REDUCE", "NEWOBJ"), self._call))
        table.update(dict.fromkeys(("EXT1", "EXT2", "EXT4"), self._extension))
        table.update({
            "APPEND": self._append, "SETITEM": self._setitem, "BUILD": self._build,
            "MARK": self._mark, "POP": self._pop, "POP_MARK": self._pop_mark, "DUP": self._dup,
            "GLOBAL": self._global, "STACK_GLOBAL": self._stack_global, "INST": self._inst, "OBJ": self._obj,
            "NEWOBJ_EX": self._call_ex, "PERSID": self._persid, "BINPERSID": self._binpersid,
            "NEXT_BUFFER": self._next_buffer, "READONLY_BUFFER": self._readonly_buffer,
            "PROTO": self._proto, "FRAME": self._frame,
        })
        assert set(table) == {op.name for op in pickletools.opcodes} - {"STOP"}, "one handler per opcode"
        for op in self.hook.refused:
            table[op] = self._refuse
        if self.max_values is not None:
            for op in MAKES_A_VALUE:
                table[op] = self._counted(table[op])
        return table

    def _counted(self, handler):
        def counted(op: str, arg, pos: int) -> None:
            self.values_left -= 1
            if self.values_left < 0:
                raise PickleLimitError(f"more than {self.max_values} values", pos)
            handler(op, arg, pos)
        return counted

    def _refuse(self, op: str, arg, pos: int) -> NoReturn:
        self.hook.refuse(op, pos)
        raise AssertionError(f"{type(self.hook).__name__}.refuse returned")  # a hook bug, not input

    def _literal(self, op: str, arg, pos: int) -> None:
        self.stack.append(self.hook.literal(op, arg, pos))

    def _collect_mark(self, op: str, arg, pos: int) -> None:
        items = self.pop_mark(pos)
        self.stack.append(self.hook.collect(op, items, pos))

    def _collect_top(self, op: str, arg, pos: int) -> None:
        n = _TUPLE_SIZE[op]
        stack = self.stack
        if len(stack) < n:
            raise PickleStreamError("stack underflow", pos)
        items = stack[-n:]
        del stack[-n:]
        stack.append(self.hook.collect(op, items, pos))

    def _append(self, op: str, arg, pos: int) -> None:
        value = self.pop(pos)
        self.hook.add_to(op, self.top(pos), [value], pos)

    def _setitem(self, op: str, arg, pos: int) -> None:
        value = self.pop(pos)
        key = self.pop(pos)
        self.hook.add_to(op, self.top(pos), [key, value], pos)

    def _add_marked(self, op: str, arg, pos: int) -> None:
        items = self.pop_mark(pos)
        self.hook.add_to(op, self.top(pos), items, pos)

    def _build(self, op: str, arg, pos: int) -> None:
        state = self.pop(pos)
        self.hook.build(self.top(pos), state, pos)

    def _mark(self, op: str, arg, pos: int) -> None:
        if len(self.metastack) >= MAX_MARK_DEPTH:
            raise PickleLimitError("MARKs nested too deep", pos)
        self.below += len(self.stack)
        self.metastack.append(self.stack)
        self.stack = []
        self.check_stack(pos)

    def _pop(self, op: str, arg, pos: int) -> None:
        if self.stack:
            self.stack.pop()
        else:  # pickle.py: POP at a MARK discards the MARK
            self.pop_mark(pos)

    def _pop_mark(self, op: str, arg, pos: int) -> None:
        self.pop_mark(pos)

    def _dup(self, op: str, arg, pos: int) -> None:
        self.stack.append(self.top(pos))

    def _get(self, op: str, arg, pos: int) -> None:
        key = parse_memo_key(arg, pos) if op == "GET" else arg
        self.stack.append(self.memo.get(key, pos))

    def _put(self, op: str, arg, pos: int) -> None:
        if op == "MEMOIZE":
            key = len(self.memo)
        else:
            key = parse_memo_key(arg, pos) if op == "PUT" else arg
        self.hook.memo_key(key, pos)
        self.memo.put(key, self.top(pos), pos)

    def _find(self, module, name, op: str, pos: int):
        if not isinstance(module, str) or not isinstance(name, str):
            return self.hook.computed_global(op, pos)
        module, name = resolve_global(module, name, protocol=self.protocol)
        return self.hook.find(module, name, op, pos)

    def _global(self, op: str, arg, pos: int) -> None:
        self.stack.append(self._find(arg[0], arg[1], op, pos))

    def _stack_global(self, op: str, arg, pos: int) -> None:
        name = self.pop(pos)
        module = self.pop(pos)
        self.stack.append(self._find(module, name, op, pos))

    def _inst(self, op: str, arg, pos: int) -> None:
        cls = self._find(arg[0], arg[1], op, pos)
        args = tuple(self.pop_mark(pos))
        self.stack.append(self.hook.call(op, cls, args, None, pos))

    def _obj(self, op: str, arg, pos: int) -> None:
        items = self.pop_mark(pos)
        if not items:
            raise PickleStreamError("OBJ without a class", pos)
        self.stack.append(self.hook.call(op, items[0], tuple(items[1:]), None, pos))

    def _call(self, op: str, arg, pos: int) -> None:
        args = self.pop(pos)
        callee = self.pop(pos)
        self.stack.append(self.hook.call(op, callee, args, None, pos))

    def _call_ex(self, op: str, arg, pos: int) -> None:
        kwargs = self.pop(pos)
        args = self.pop(pos)
        callee = self.pop(pos)
        self.stack.append(self.hook.call(op, callee, args, kwargs, pos))

    def _extension(self, op: str, arg, pos: int) -> None:
        self.stack.append(self.hook.extension(op, arg, pos))

    def _persid(self, op: str, arg, pos: int) -> None:
        self.stack.append(self.hook.persistent(op, arg, pos))

    def _binpersid(self, op: str, arg, pos: int) -> None:
        pid = self.pop(pos)
        self.stack.append(self.hook.persistent(op, pid, pos))

    def _next_buffer(self, op: str, arg, pos: int) -> None:
        self.stack.append(self.hook.buffer(op, pos))

    def _readonly_buffer(self, op: str, arg, pos: int) -> None:
        self.hook.buffer(op, pos)  # the stack is left as it is: a read-only view of the same value

    def _proto(self, op: str, arg, pos: int) -> None:
        if arg > HIGHEST_PICKLE_PROTOCOL:
            raise PickleStreamError(f"unsupported pickle protocol {arg}", pos)
        self.protocol = arg

    def _frame(self, op: str, arg, pos: int) -> None:
        pass  # FRAME bounds are the decoder's (FrameCheck)


_TUPLE_SIZE = {"TUPLE1": 1, "TUPLE2": 2, "TUPLE3": 3}
