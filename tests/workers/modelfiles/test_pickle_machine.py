"""The scanner and the restricted reader run one opcode machine (pickle_machine): where a stream
stops being a pickle, where it ends and which globals it names is decided once for both.

Pickles here are written by pickle.dumps or opcode by opcode; nothing is unpickled."""
import pickle
import struct
from collections import OrderedDict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.workers.modelfiles import hostile
from workers.modelfiles import pickle_scan, restricted_pickle
from workers.modelfiles.pickle_machine import PickleMachine, PickleStreamError, iter_ops
from workers.modelfiles.types import ModelFileError


def _scanner(data: bytes):
    """(error class, error offset) or (None, end) of the scanner's walk, and its stream."""
    stream = pickle_scan.scan_stream(data)
    decision = (type(stream.error), stream.error.pos) if stream.error else (None, stream.end)
    return decision, stream


def _reader(data: bytes):
    try:
        _, end = restricted_pickle.load_restricted(data)
    except PickleStreamError as exc:
        return type(exc), exc.pos
    return None, end


_OBJ = {"a": [1, 2.5, "x" * 300, b"y" * 40], "b": (None, True), "c": {3}}
UNFRAMED = pickle.dumps(_OBJ, protocol=2)
FRAMED = pickle.dumps(_OBJ, protocol=5)


@pytest.mark.parametrize("cut", range(1, len(UNFRAMED)), ids=lambda n: f"cut{n}")
def test_a_truncated_stream_stops_both_at_the_same_byte_with_the_same_error(cut):
    data = UNFRAMED[:cut]
    decision, _ = _scanner(data)
    assert decision[0] is not None and issubclass(decision[0], PickleStreamError)
    assert _reader(data) == decision


@pytest.mark.parametrize("cut", range(12, len(FRAMED) - 1, 7))
def test_a_truncated_frame_is_the_anomaly_the_scanner_flags_where_the_reader_stops(cut):
    data = FRAMED[:cut]
    with pytest.raises(PickleStreamError, match="FRAME longer than the data") as refused:
        restricted_pickle.load_restricted(data)
    flagged = {f.what: f.where for f in pickle_scan.scan_pickle_bytes(data, where="p")}
    assert flagged["FRAME longer than the data"] == f"p@{refused.value.pos}"


def _frame_cases():
    memoize_after_frame = b"\x80\x05" + hostile.frame(5) + b"]\x94N\x94a" + b"h\x00."
    straddle = b"\x80\x05" + hostile.frame(3) + b"\x8c\x05hello\x94."  # the string runs past the frame
    frame_past_stop = b"\x80\x05" + hostile.frame(6) + b"N." + b"NNNN"
    bytearray8 = pickle.dumps(bytearray(b"abc" * 50_000), protocol=5)  # BYTEARRAY8 outside any frame
    truncated_frame = b"\x80\x05" + hostile.frame(20) + b"N."
    return {"memoize after frame": memoize_after_frame, "straddling string": straddle,
            "frame past stop": frame_past_stop, "bytearray8": bytearray8, "frame longer than data": truncated_frame}


@pytest.mark.parametrize("name", list(_frame_cases()))
def test_frame_edge_cases_get_one_decision(name):
    data = _frame_cases()[name]
    frames_flagged = any("FRAME" in f.what for f in pickle_scan.scan_pickle_bytes(data, where="p"))
    try:
        _, end = restricted_pickle.load_restricted(data)
    except ModelFileError as exc:
        assert frames_flagged and "FRAME" in str(exc)  # the reader refuses exactly what the scanner flags
    else:
        assert not frames_flagged
        assert _scanner(data)[0] == (None, end)


def test_memoize_after_a_frame_is_the_same_memo_slot_for_both():
    data = b"\x80\x05" + hostile.frame(5) + b"]\x94N\x94a" + b"h\x00."
    value, _ = restricted_pickle.load_restricted(data)
    assert value == [None]
    assert _scanner(data)[0] == (None, len(data))


def test_next_buffer_is_decoded_alike_and_refused_only_by_the_reader_hook():
    data = b"\x80\x05\x97\x98."  # NEXT_BUFFER, READONLY_BUFFER, STOP
    assert _scanner(data)[0] == (None, len(data))
    with pytest.raises(ModelFileError, match="NEXT_BUFFER is not allowed"):
        restricted_pickle.load_restricted(data)


def test_both_hooks_share_the_machines_caps(monkeypatch):
    deep = hostile.pickle_of(b"(" * (pickle_scan.MAX_MARK_DEPTH + 1) + b"N")
    assert isinstance(_scanner(deep)[1].error, pickle_scan.PickleLimitError)
    with pytest.raises(pickle_scan.PickleLimitError, match="MARKs nested too deep"):
        restricted_pickle.load_restricted(deep)


# --- differential: on benign pickles, the scanner's globals are what the reader resolves ---------

class _Recording(restricted_pickle._Inert):
    def __init__(self):
        super().__init__(restricted_pickle.storage_from_persistent_id)
        self.found: set[str] = set()

    def find(self, module, name, op, pos):
        self.found.add(f"{module}.{name}")
        return super().find(module, name, op, pos)


_leaves = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False)
           | st.text(max_size=20) | st.binary(max_size=20) | st.complex_numbers(allow_nan=False, max_magnitude=1e6)
           | st.builds(bytearray, st.binary(max_size=8)) | st.builds(slice, st.integers(0, 9), st.integers(0, 9))
           | st.builds(range, st.integers(0, 100)) | st.builds(np.int64, st.integers(-2**40, 2**40))
           | st.builds(np.float32, st.floats(-1e6, 1e6, width=32)))
_hashable = st.none() | st.integers(-1000, 1000) | st.text(max_size=8) | st.binary(max_size=8)
_values = st.recursive(_leaves, lambda inner: (
    st.lists(inner, max_size=5) | st.tuples(inner, inner) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    | st.builds(OrderedDict, st.dictionaries(st.text(max_size=8), inner, max_size=3))
    | st.sets(_hashable, max_size=4) | st.frozensets(_hashable, max_size=4)), max_leaves=25)


@settings(max_examples=300, deadline=None)
@given(value=_values, protocol=st.integers(0, 5), share=st.booleans())
def test_the_scanners_globals_are_exactly_what_the_reader_resolves(value, protocol, share):
    data = pickle.dumps([value, value] if share else value, protocol=protocol)
    hook = _Recording()
    _, end = PickleMachine(hook, max_values=restricted_pickle.MAX_VALUES).run(iter_ops(data, keep_bytes=True))
    (error, scan_end), stream = _scanner(data)
    assert error is None and scan_end == end == len(data)
    assert stream.globals == hook.found
    assert stream.findings == []


def test_the_differential_check_sees_globals_at_all():
    data = pickle.dumps([OrderedDict(a=1), {1}, np.int64(3), struct.pack("<i", 1)], protocol=2)
    hook = _Recording()
    PickleMachine(hook).run(iter_ops(data, keep_bytes=True))
    assert {"collections.OrderedDict", "builtins.set", "numpy.dtype", "_codecs.encode"} <= hook.found
    assert _scanner(data)[1].globals == hook.found
