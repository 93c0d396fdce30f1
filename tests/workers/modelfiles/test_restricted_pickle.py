import pickle
import sys
from collections import OrderedDict

import numpy as np
import pytest
import torch

from tests.workers.modelfiles import hostile
from workers.modelfiles.pickle_scan import SAFE_GLOBALS
from workers.modelfiles.restricted_pickle import (
    STAND_INS, Opaque, OpaqueClass, StorageRef, TensorRef, load_restricted, storage_from_persistent_id,
)
from workers.modelfiles.types import ModelFileError

PLAIN = {"ints": [0, 1, -1, 255, 65536, -2**31, 2**100], "floats": (1.5, -0.0, float("inf")),
         "text": "ünïcode", "raw": b"\x00\xff", "none": None, "bools": [True, False],
         "nested": {"a": [{"b": ()}]}, "set": {1, 2}, "frozen": frozenset({"x"}),
         "ordered": OrderedDict([("k", 1)]), "ba": bytearray(b"ab"), "slice": slice(1, 5, 2)}


@pytest.mark.parametrize("protocol", range(6))
def test_plain_data_round_trips_at_every_protocol(protocol):
    data = pickle.dumps(PLAIN, protocol=protocol)
    value, end = load_restricted(data)
    assert value == PLAIN
    assert end == len(data)


def test_shared_references_stay_shared():
    inner = [1, 2]
    value, _ = load_restricted(pickle.dumps({"a": inner, "b": inner}, protocol=2))
    assert value["a"] is value["b"]


def test_every_allowlisted_global_has_a_stand_in_and_nothing_more():
    assert set(STAND_INS) == SAFE_GLOBALS


@pytest.mark.parametrize("name", ["gadget_os_system", "gadget_builtins_exec", "inst_opcode", "obj_opcode",
                                  "dotted_name", "ext_opcode", "stack_global_memo_decoys"])
def test_hostile_pickles_are_refused_without_running(tmp_path, name):
    canary = tmp_path / "CANARY"
    path = hostile.HOSTILE[name][0](tmp_path / "p.pkl", canary)
    with pytest.raises(ModelFileError):
        load_restricted(path.read_bytes())
    assert not canary.exists()


def test_unknown_class_becomes_opaque_and_its_module_is_never_imported():
    module = "not_a_real_module_for_restricted_pickle"
    data = hostile.pickle_of(hostile.glob(module, "Thing") + b")\x81" + b"}" + hostile.s("x") + hostile.i(7) + b"sb")
    value, _ = load_restricted(data)
    assert isinstance(value, Opaque)
    assert (value.module, value.name, value.state) == (module, "Thing", {"x": 7})
    assert module not in sys.modules


def test_numpy_scalar_and_array_are_rebuilt_from_bytes():
    obj = {"step": np.int64(1234), "lr": np.float32(0.5), "arr": np.arange(6, dtype=">i4").reshape(2, 3)}
    value, _ = load_restricted(pickle.dumps(obj, protocol=2))
    assert value["step"] == 1234 and value["step"].dtype == np.int64
    assert value["lr"] == np.float32(0.5)
    np.testing.assert_array_equal(value["arr"].array, obj["arr"])


def test_numpy_object_arrays_are_refused():
    with pytest.raises(ModelFileError):
        load_restricted(pickle.dumps(np.array([1, "a"], dtype=object), protocol=2))


def test_torch_tensor_becomes_a_storage_view_record(tmp_path):
    path = tmp_path / "t.pt"
    base = torch.arange(12, dtype=torch.float16).reshape(3, 4)
    torch.save({"view": base.t()[1:]}, path)
    import zipfile
    value, _ = load_restricted(zipfile.ZipFile(path).read("t/data.pkl"))
    ref = value["view"]
    assert isinstance(ref, TensorRef)
    assert ref.dtype == "F16" and ref.storage.dtype == "F16" and ref.storage.numel == 12
    assert ref.size == tuple(base.t()[1:].shape)
    assert ref.stride == base.t()[1:].stride()
    assert ref.offset == base.t()[1:].storage_offset()


@pytest.mark.parametrize("pid", [
    ("module", OpaqueClass("m", "n"), "k", "cpu", 1),
    ("storage", "FloatStorage", "0", "cpu", 4),
    ("storage", STAND_INS["torch.FloatStorage"], "../../etc", "cpu", 4),
    ("storage", STAND_INS["torch.FloatStorage"], "0", "cpu", -1),
    ("storage", STAND_INS["torch.FloatStorage"], "0", "cpu", True),
    ("storage", STAND_INS["torch.FloatStorage"], "0", "cpu", 4, ("view", 0, 2)),
    "storage",
])
def test_persistent_ids_are_validated(pid):
    with pytest.raises(ModelFileError):
        storage_from_persistent_id(pid)


def test_valid_persistent_id():
    ref = storage_from_persistent_id(("storage", STAND_INS["torch.BFloat16Storage"], "7", "cuda:0", 10))
    assert ref == StorageRef("7", "BF16", 10, "cuda:0")


def test_codecs_encode_only_turns_latin1_text_into_bytes():
    ok = hostile.pickle_of(hostile.call(hostile.glob("_codecs", "encode"), hostile.s("\xff"), hostile.s("latin1")))
    assert load_restricted(ok)[0] == b"\xff"
    rot = hostile.pickle_of(hostile.call(hostile.glob("_codecs", "encode"), hostile.s("bf"), hostile.s("rot13")))
    with pytest.raises(ModelFileError):
        load_restricted(rot)


def test_memo_expansion_is_cheap_because_references_are_shared(tmp_path):
    body = b"]\x94"
    for n in range(60):
        body += b"(h" + bytes([n]) + b"h" + bytes([n]) + b"l\x94"
    value, _ = load_restricted(hostile.pickle_of(body, protocol=4))
    assert value[0] is value[1]


@pytest.mark.parametrize("data", [b"", b"\x80\x02", b"\x80\x02}q\x00(", b"\x80\x09N.", b"\x80\x02h\x05.", b"0."])
def test_malformed_streams_raise_model_file_error(data):
    with pytest.raises(ModelFileError):
        load_restricted(data)


def test_long_protocol_0_strings_are_read_whole():
    text = "x" * 200_000
    assert load_restricted(pickle.dumps({"t": text, "u": text + "é"}, protocol=0))[0] == {"t": text, "u": text + "é"}


@pytest.mark.timeout(20)
def test_errors_about_memo_built_graphs_do_not_repr_them_in_full():
    body = b"]\x94"
    for n in range(60):
        body += b"0(h" + bytes([n]) + b"h" + bytes([n]) + b"l\x94"
    for tail in (b"Q", b"(" + hostile.glob("numpy", "dtype") + b"h\x3c\x85R"):
        with pytest.raises(ModelFileError):
            load_restricted(hostile.pickle_of(body + tail, protocol=4))


def test_an_ordered_dicts_attribute_state_is_dropped_and_other_build_states_refused():
    od = OrderedDict(a=1)
    od._metadata = {"": {"version": 1}}  # what nn.Module.state_dict() attaches
    value, _ = load_restricted(pickle.dumps(od, protocol=2))
    assert value == {"a": 1} and not hasattr(value, "_metadata")  # nothing of the file's is set on an object
    # BUILD with a non-dict state on an OrderedDict (a __setstate__-style payload) stays refused.
    forged = pickle.dumps(OrderedDict(), protocol=2)[:-1] + pickle.dumps([1], protocol=2)[2:-1] + b"b."
    with pytest.raises(ModelFileError, match="BUILD on OrderedDict"):
        load_restricted(forged)
