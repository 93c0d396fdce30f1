"""FRAMEs as pickle.py and _pickle.c read them (pickle_scan.FrameCheck, _CFileReads).

The hostile samples are assembled opcode by opcode (hostile.py); nothing here unpickles anything.
"""
import pickle
import struct

import pytest

from tests.workers.modelfiles import hostile
from workers.modelfiles.pickle_scan import (
    FrameCheck, PickleStreamError, _iter_ops_c_file, iter_ops, scan_path, scan_pickle_bytes,
)
from workers.modelfiles.restricted_pickle import load_restricted
from workers.modelfiles.types import ModelFileError

FRAME_SAMPLES = ["frame_overrun", "frame_straddle_binbytes", "frame_straddle_global", "frame_nested",
                 "frame_past_stop", "zip_frame_straddle"]


def _framed(body: bytes, length: int) -> bytes:
    return b"\x80\x05" + hostile.frame(length) + body


def _findings(data: bytes):
    return {f.what: f for f in scan_pickle_bytes(data, where="p")}


@pytest.mark.parametrize("name", FRAME_SAMPLES)
def test_frame_tricks_are_dangerous_and_name_the_payload_a_loader_would_import(tmp_path, name):
    path = hostile.HOSTILE[name][0](tmp_path / f"{name}.pkl", tmp_path / "CANARY")
    report = scan_path(path)
    assert report.verdict == "dangerous"
    assert "os.system" in report.globals_seen, report.findings
    assert any("FRAME" in f.what for f in report.findings)


def test_a_frame_longer_than_the_data_is_dangerous_and_the_walk_goes_on_as_pickle_py_does():
    data = b"\x80\x04" + hostile.frame(1 << 40) + hostile.call(hostile.glob("os", "system"), hostile.s("x")) + b"."
    found = _findings(data)
    assert found["FRAME longer than the data"].severity == "dangerous"
    assert "only 21 remain" in found["FRAME longer than the data"].why
    assert found["os.system"].severity == "dangerous"  # not "broken pickle": pickle.py imports it


@pytest.mark.parametrize("body, length", [
    (b"B" + struct.pack("<I", 20) + b"A" * 20 + b"0", 5),  # BINBYTES payload
    (b"\x8c\x14" + b"A" * 20 + b"0", 3),                   # SHORT_BINUNICODE
    (b"cmacos\nsystem\n0", 4),                             # GLOBAL's module line
    (b"cos\nsystem\n0", 7),                                # GLOBAL's name line
    (b"Vhello world\n0", 5),                               # UNICODE
    (b"J" + struct.pack("<i", 7) + b"0", 2),               # BININT
    (b"N0" + b"J" + struct.pack("<i", 7) + b"0", 3),       # the opcode is the frame's last byte
])
def test_an_opcode_that_straddles_a_frame_boundary_is_dangerous(body, length):
    found = _findings(_framed(body, length) + b"N.")
    assert found["opcode straddles a FRAME boundary"].severity == "dangerous"


def test_a_frame_inside_a_frame_is_dangerous():
    data = b"\x80\x05" + hostile.frame(30) + b"N" + hostile.frame(2) + b"N0" + b"N" * 17 + b"0" * 9 + b"N."
    assert "FRAME inside a FRAME" in _findings(data)


def test_the_c_file_reading_finds_what_a_byte_by_byte_reading_sees_as_data():
    # fickling's divergence case: BINBYTES' length comes from after a 2-byte frame.
    hidden = hostile.call(hostile.glob("os", "system"), hostile.s("echo"))
    data = (b"\x80\x05N(" + hostile.frame(2) + b"B\x07" + b"\x01\x00\x00" + b"\x00\x00"
            + (hidden + b"(").ljust(261, b"N") + b"1.")
    linear = [op for op, _, _ in iter_ops(data, frames=FrameCheck(len(data), strict=False))]
    assert "GLOBAL" not in linear  # byte by byte, the payload is the BINBYTES' data
    c_file = [(op, arg) for op, arg, _ in _iter_ops_c_file(data, start=0, end=len(data))]
    assert ("GLOBAL", ("os", "system")) in c_file
    found = _findings(data)
    assert found["pickle readers disagree"].severity == "dangerous"
    assert "_pickle.c reads it from a file" in found["os.system"].why


def test_a_frame_that_ends_after_stop_scans_where_each_reader_starts_the_next_pickle(tmp_path):
    path = hostile.frame_past_stop(tmp_path / "p.pkl", tmp_path / "CANARY")
    report = scan_path(path)
    what = {f.what for f in report.findings}
    assert {"FRAME runs past STOP", "os.system"} <= what


@pytest.mark.parametrize("protocol", [2, 4, 5])
@pytest.mark.parametrize("obj", [
    [1, 2, 3, 4], b"x" * 100000, [1, b"y" * 100000, 2], list(range(200000)),
    {"a": [1, 2, {"b": (3, 4)}], "c": [5, 6]}, ["s" * 70000, "t" * 70000, {"u": b"v" * 140000}],
], ids=["small", "large-bytes", "interleaved", "many-frames", "nested", "big-strings"])
@pytest.mark.parametrize("dumps", [pickle.dumps, pickle._dumps], ids=["C", "python"])
def test_well_formed_frames_from_both_picklers_are_not_flagged(obj, protocol, dumps):
    # CPython writes large objects outside any frame: those bytes sit between frames, not in one.
    data = dumps(obj, protocol=protocol)
    assert scan_pickle_bytes(data, where="p") == []
    assert [(op, pos) for op, _, pos in iter_ops(data)] == \
        [(op, pos) for op, _, pos in _iter_ops_c_file(data, start=0, end=len(data))]


@pytest.mark.parametrize("name", FRAME_SAMPLES[:-1])
def test_the_restricted_reader_refuses_any_frame_anomaly(tmp_path, name):
    data = hostile.HOSTILE[name][0](tmp_path / "f.pkl", tmp_path / "CANARY").read_bytes()
    with pytest.raises(ModelFileError, match="FRAME"):
        load_restricted(data)


def test_strict_framing_is_the_default_for_iter_ops():
    with pytest.raises(PickleStreamError, match="FRAME longer than the data"):
        list(iter_ops(b"\x80\x04" + hostile.frame(100) + b"N."))
