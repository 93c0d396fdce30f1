import json
import struct
import time

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.workers.modelfiles.builders import (
    assert_arrays_equal,
    raw_safetensors,
    safetensors_bytes,
    write_safetensors,
)
from workers.modelfiles.safetensors_reader import (
    MAX_HEADER_SIZE,
    MAX_NAME_LENGTH,
    MAX_RANK,
    SafetensorsError,
    iter_safetensors_tensors,
    read_safetensors_header,
)
from workers.modelfiles.types import ModelFileError, TruncatedFileError


def _tensors():
    gen = torch.Generator().manual_seed(3)
    return {
        "f32": torch.randn(3, 5, generator=gen),
        "f16": torch.randn(7, generator=gen).half(),
        "bf16": torch.randn(2, 2, 2, generator=gen).bfloat16(),
        "f64": torch.randn(4, generator=gen).double(),
        "i64": torch.arange(-3, 6, dtype=torch.int64).reshape(3, 3),
        "i8": torch.tensor([-128, 0, 127], dtype=torch.int8),
        "u8": torch.tensor([0, 255], dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "i32": torch.tensor([[1 << 30]], dtype=torch.int32),
        "i16": torch.tensor([-2, 2], dtype=torch.int16),
        "c64": torch.tensor([1 + 2j, -3j], dtype=torch.complex64),
        "f8e4m3": torch.tensor([0.5, -2.0, 448.0]).to(torch.float8_e4m3fn),
        "f8e5m2": torch.tensor([0.5, -2.0, 57344.0]).to(torch.float8_e5m2),
        "scalar": torch.tensor(1.5),
        "empty": torch.zeros(0, 4),
    }


def _write(tmp_path, data: bytes, name="m.safetensors"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _valid_header():
    return {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
            "b": {"dtype": "F16", "shape": [2], "data_offsets": [8, 12]}}


# --- reading valid files --------------------------------------------------------

def test_reads_every_dtype_back_bit_for_bit(tmp_path):
    tensors = _tensors()
    path = write_safetensors(tmp_path / "all.safetensors", tensors)
    seen = {t.name: t for t in iter_safetensors_tensors(path)}
    assert set(seen) == set(tensors)
    for name, expected in tensors.items():
        assert seen[name].shape == tuple(expected.shape)
        assert_arrays_equal(seen[name].array, expected)


def test_float_values_match_what_torch_saved(tmp_path):
    tensors = _tensors()
    path = write_safetensors(tmp_path / "all.safetensors", tensors)
    seen = {t.name: t for t in iter_safetensors_tensors(path)}
    assert np.array_equal(seen["f32"].array, tensors["f32"].numpy())
    assert np.array_equal(seen["f16"].array, tensors["f16"].numpy())
    widened = (seen["bf16"].array.astype(np.uint32) << 16).view(np.float32)
    assert np.array_equal(widened, tensors["bf16"].float().numpy())


def test_carried_dtypes_and_labels(tmp_path):
    path = write_safetensors(tmp_path / "all.safetensors", _tensors())
    seen = {t.name: t for t in iter_safetensors_tensors(path)}
    assert (seen["bf16"].dtype, seen["bf16"].array.dtype) == ("BF16", np.dtype("<u2"))
    assert (seen["f8e4m3"].dtype, seen["f8e4m3"].array.dtype) == ("F8_E4M3", np.dtype("u1"))
    assert (seen["f8e5m2"].dtype, seen["f8e5m2"].array.dtype) == ("F8_E5M2", np.dtype("u1"))
    assert seen["f32"].array.dtype == np.dtype("<f4")


def test_arrays_are_read_only_views_of_the_file(tmp_path):
    path = write_safetensors(tmp_path / "v.safetensors", {"x": torch.arange(1024, dtype=torch.float32)})
    (tensor,) = iter_safetensors_tensors(path)
    assert not tensor.array.flags.writeable
    assert tensor.array.base is not None  # a view, not a copy
    with pytest.raises(ValueError):
        tensor.array[0] = 1


def test_arrays_stay_valid_after_iterating_past_them(tmp_path):
    big = {f"t{i}": torch.randn(64 * 1024) for i in range(4)}  # several pages each
    path = write_safetensors(tmp_path / "big.safetensors", big)
    kept = list(iter_safetensors_tensors(path))  # earlier pages were released meanwhile
    for tensor in kept:
        assert_arrays_equal(tensor.array, big[tensor.name])


def test_tensors_come_in_data_order_not_header_order(tmp_path):
    data = np.arange(4, dtype="<f4").tobytes()
    header = {"second": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]},
              "first": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}
    path = _write(tmp_path, raw_safetensors(header, data))
    assert [t.name for t in iter_safetensors_tensors(path)] == ["first", "second"]
    assert [e.name for e in read_safetensors_header(path).tensors] == ["first", "second"]


def test_header_fields(tmp_path):
    data = safetensors_bytes({"w": torch.ones(3, 2)}, metadata={"format": "pt", "note": "x"})
    path = _write(tmp_path, data)
    header = read_safetensors_header(path)
    (n,) = struct.unpack("<Q", data[:8])
    assert header.header_size == n and header.data_start == 8 + n and header.file_size == len(data)
    assert header.metadata == {"format": "pt", "note": "x"}
    (entry,) = header.tensors
    assert (entry.name, entry.dtype, entry.shape, entry.begin, entry.end) == ("w", "F32", (3, 2), 0, 24)


def test_zero_sized_tensors_and_empty_file(tmp_path):
    path = write_safetensors(tmp_path / "z.safetensors", {"a": torch.zeros(0), "b": torch.ones(2), "c": torch.zeros(3, 0)})
    assert sorted(t.name for t in iter_safetensors_tensors(path)) == ["a", "b", "c"]
    empty = _write(tmp_path, raw_safetensors({}), "empty.safetensors")
    assert read_safetensors_header(empty).tensors == ()
    assert list(iter_safetensors_tensors(empty)) == []


def test_null_metadata_is_accepted_like_the_reference(tmp_path):
    path = _write(tmp_path, raw_safetensors({"__metadata__": None}))
    assert read_safetensors_header(path).metadata == {}


# --- strict rejections --------------------------------------------------------

def _rejects(tmp_path, data: bytes, match: str):
    path = _write(tmp_path, data)
    with pytest.raises(SafetensorsError, match=match):
        read_safetensors_header(path)
    with pytest.raises(SafetensorsError, match=match):
        list(iter_safetensors_tensors(path))


def test_error_type_is_a_model_file_error():
    assert issubclass(SafetensorsError, ModelFileError)


def test_rejects_duplicate_keys(tmp_path):
    text = ('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
            '"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}')
    _rejects(tmp_path, raw_safetensors(text, b"\0" * 8), "duplicate key")


def test_rejects_duplicate_keys_inside_an_entry(tmp_path):
    text = '{"a":{"dtype":"F32","dtype":"F16","shape":[1],"data_offsets":[0,4]}}'
    _rejects(tmp_path, raw_safetensors(text, b"\0" * 4), "duplicate key")


def test_rejects_a_hole_between_tensors(tmp_path):
    header = _valid_header()
    header["b"]["data_offsets"] = [10, 14]
    _rejects(tmp_path, raw_safetensors(header, b"\0" * 14), "hole")


def test_rejects_a_hole_at_the_start(tmp_path):
    header = {"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}
    _rejects(tmp_path, raw_safetensors(header, b"\0" * 8), "hole")


def test_rejects_overlapping_tensors(tmp_path):
    header = _valid_header()
    header["b"]["data_offsets"] = [6, 10]
    _rejects(tmp_path, raw_safetensors(header, b"\0" * 10), "overlap")


def test_rejects_wrong_extent(tmp_path):
    header = _valid_header()
    header["a"]["shape"] = [3]
    _rejects(tmp_path, raw_safetensors(header, b"\0" * 12), "extent")


def test_rejects_trailing_bytes_after_the_buffer(tmp_path):
    _rejects(tmp_path, raw_safetensors(_valid_header(), b"\0" * 13), "file size")


def test_a_truncated_buffer_says_how_much_is_there_in_words(tmp_path):
    _rejects(tmp_path, raw_safetensors(_valid_header(), b"\0" * 11),
             "^truncated: 11 of 12 data bytes present — an incomplete download\\?$")
    with pytest.raises(TruncatedFileError):
        read_safetensors_header(_write(tmp_path, raw_safetensors(_valid_header(), b"\0" * 11)))


def test_rejects_a_header_longer_than_the_file_as_truncated(tmp_path):
    _rejects(tmp_path, struct.pack("<Q", 1000) + b"{}", "^truncated: the 1000-byte header runs past the end")
    with pytest.raises(TruncatedFileError):
        read_safetensors_header(_write(tmp_path, struct.pack("<Q", 1000) + b"{}"))


def test_rejects_a_header_over_100_mb(tmp_path):
    _rejects(tmp_path, struct.pack("<Q", MAX_HEADER_SIZE + 1) + b"{}", "limit")


def test_rejects_a_file_shorter_than_the_length_prefix(tmp_path):
    _rejects(tmp_path, b"\x02\0\0", "too small")


def test_rejects_bad_json(tmp_path):
    _rejects(tmp_path, raw_safetensors('{"a": {"dtype": "F32",'), "not valid JSON")


def test_rejects_invalid_utf8(tmp_path):
    _rejects(tmp_path, raw_safetensors(b'{"\xff\xfe": 1}'), "UTF-8")


def test_rejects_lone_surrogate_escapes(tmp_path):
    text = '{"\\ud800":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
    _rejects(tmp_path, raw_safetensors(text, b"\0" * 4), "Unicode")


def test_rejects_a_header_that_is_not_an_object(tmp_path):
    _rejects(tmp_path, raw_safetensors("[1, 2]"), "start with")


def test_rejects_leading_whitespace(tmp_path):
    _rejects(tmp_path, raw_safetensors(" {}"), "start with")


def test_rejects_unknown_dtype(tmp_path):
    header = {"a": {"dtype": "F4", "shape": [2], "data_offsets": [0, 1]}}
    _rejects(tmp_path, raw_safetensors(header, b"\0"), "unsupported dtype")


def test_rejects_unknown_tensor_fields(tmp_path):
    header = _valid_header()
    header["a"]["extra"] = 1
    _rejects(tmp_path, raw_safetensors(header, b"\0" * 12), "unknown fields")


def test_rejects_missing_tensor_fields(tmp_path):
    header = {"a": {"dtype": "F32", "shape": [0]}}
    _rejects(tmp_path, raw_safetensors(header), "missing fields")


def test_rejects_non_string_metadata(tmp_path):
    header = {"__metadata__": {"steps": 1000}}
    _rejects(tmp_path, raw_safetensors(header), "not a string")


def test_rejects_negative_dimension(tmp_path):
    header = {"a": {"dtype": "F32", "shape": [-1, -4], "data_offsets": [0, 16]}}
    _rejects(tmp_path, raw_safetensors(header, b"\0" * 16), "out of range")


def test_rejects_huge_dimensions(tmp_path):
    header = {"a": {"dtype": "F32", "shape": [2**62, 2**62], "data_offsets": [0, 4]}}
    _rejects(tmp_path, raw_safetensors(header, b"\0" * 4), "out of range")


def test_rejects_a_huge_shape_product(tmp_path):
    header = {"a": {"dtype": "F32", "shape": [2**40, 2**40], "data_offsets": [0, 4]}}
    _rejects(tmp_path, raw_safetensors(header, b"\0" * 4), "extent")


def test_rejects_float_and_bool_dimensions(tmp_path):
    for shape in ([2.0], [True]):
        header = {"a": {"dtype": "F32", "shape": shape, "data_offsets": [0, 8]}}
        _rejects(tmp_path, raw_safetensors(header, b"\0" * 8), "list of integers")


def test_rejects_nan_constants(tmp_path):
    _rejects(tmp_path, raw_safetensors('{"a": NaN}'), "constant")


def test_rejects_too_high_rank(tmp_path):
    shape = [1] * (MAX_RANK + 1)
    header = {"a": {"dtype": "F32", "shape": shape, "data_offsets": [0, 4]}}
    _rejects(tmp_path, raw_safetensors(header, b"\0" * 4), "rank")


def test_rejects_too_long_names(tmp_path):
    header = {"a" * (MAX_NAME_LENGTH + 1): {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}}
    _rejects(tmp_path, raw_safetensors(header), "name")


def test_rejects_reversed_offsets(tmp_path):
    header = {"a": {"dtype": "F32", "shape": [0], "data_offsets": [4, 0]}}
    _rejects(tmp_path, raw_safetensors(header, b"\0" * 4), "bad data_offsets")


def test_rejects_deeply_nested_json(tmp_path):
    _rejects(tmp_path, raw_safetensors('{"a":' + "[" * 100_000 + "]" * 100_000 + "}"), "JSON")


def test_rejects_too_many_tensors(tmp_path, monkeypatch):
    import workers.modelfiles.safetensors_reader as reader

    monkeypatch.setattr(reader, "MAX_TENSORS", 3)
    header = {f"t{i}": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]} for i in range(4)}
    _rejects(tmp_path, raw_safetensors(header), "limit")


def test_missing_file_is_a_safetensors_error(tmp_path):
    with pytest.raises(SafetensorsError):
        read_safetensors_header(tmp_path / "nope.safetensors")
    with pytest.raises(SafetensorsError):
        list(iter_safetensors_tensors(tmp_path / "nope.safetensors"))


# --- fuzzing ----------------------------------------------------------------------

_SEED = safetensors_bytes({
    "model.a.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3),
    "model.b": torch.tensor([1, 2], dtype=torch.int64),
    "model.c": torch.ones(3, dtype=torch.bfloat16),
}, metadata={"format": "pt"})


def _mutate(data: bytes, edits) -> bytes:
    buf = bytearray(data)
    for kind, pos, value in edits:
        pos %= max(len(buf), 1)
        if kind == "flip" and buf:
            buf[pos] ^= value or 1
        elif kind == "insert":
            buf[pos:pos] = bytes([value])
        elif kind == "delete" and buf:
            del buf[pos]
        elif kind == "truncate":
            del buf[pos:]
    return bytes(buf)


_edits = st.lists(st.tuples(st.sampled_from(["flip", "insert", "delete", "truncate"]),
                            st.integers(0, len(_SEED) + 8), st.integers(0, 255)), min_size=1, max_size=6)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=_edits)
def test_fuzzed_files_raise_only_safetensors_error(tmp_path, edits):
    path = _write(tmp_path, _mutate(_SEED, edits), "fuzz.safetensors")
    started = time.perf_counter()
    for read in (read_safetensors_header, lambda p: [t.array.sum() for t in iter_safetensors_tensors(p)]):
        try:
            read(path)
        except SafetensorsError:
            pass
    assert time.perf_counter() - started < 2.0


_header_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entry=st.dictionaries(st.sampled_from(["dtype", "shape", "data_offsets", "x"]), _header_values, max_size=4),
       data=st.binary(max_size=64))
def test_fuzzed_header_entries_raise_only_safetensors_error(tmp_path, entry, data):
    path = _write(tmp_path, raw_safetensors(json.dumps({"t": entry}), data), "fuzz2.safetensors")
    for read in (read_safetensors_header, lambda p: list(iter_safetensors_tensors(p))):
        try:
            read(path)
        except SafetensorsError:
            pass
