"""Property: on any bytes, the readers return a report/tensors or raise ModelFileError,
quickly and with bounded memory. Seeds are valid and hostile files, then mutated."""
import io
import pickle
import tracemalloc

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.workers.modelfiles import hostile
from workers.modelfiles.pickle_scan import scan_path
from workers.modelfiles.restricted_pickle import load_restricted
from workers.modelfiles.sniff import sniff
from workers.modelfiles.torch_reader import iter_torch_tensors
from workers.modelfiles.types import ModelFileError

pytestmark = pytest.mark.slow

MAX_PEAK_BYTES = 64 << 20


def _torch_bytes(**kwargs) -> bytes:
    out = io.BytesIO()
    torch.save({"w": torch.arange(8, dtype=torch.float32).reshape(2, 4).t(), "b": torch.ones(3).bfloat16(),
                "step": np.int64(3)}, out, **kwargs)
    return out.getvalue()


def _npy_bytes(**arrays) -> bytes:
    out = io.BytesIO()
    if arrays:
        np.savez(out, **arrays)
    else:
        np.save(out, np.arange(6, dtype=np.int16).reshape(2, 3))
    return out.getvalue()


def _hostile_bytes(tmp_dir, name) -> bytes:
    return hostile.HOSTILE[name][0](tmp_dir / name, tmp_dir / "CANARY").read_bytes()


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("seeds")
    return [_torch_bytes(), _torch_bytes(_use_new_zipfile_serialization=False), _npy_bytes(),
            _npy_bytes(a=np.ones(3)), pickle.dumps({"a": [1, 2.5, "x"]}, protocol=2),
            pickle.dumps({"a": (1, b"x")}, protocol=0), hostile.torch_zip(tmp / "z.pt", hostile.benign_zip_entries()).read_bytes(),
            *(_hostile_bytes(tmp, n) for n in ("memo_expansion", "zip_duplicate_entries", "tar_checkpoint",
                                               "legacy_payload_in_later_pickle", "npy_object_array"))]


@st.composite
def mutations(draw):
    kind = draw(st.sampled_from(["flip", "truncate", "splice", "overwrite"]))
    return kind, draw(st.integers(0, 1 << 20)), draw(st.binary(min_size=1, max_size=16)), draw(st.integers(0, 7))


def _mutate(data: bytes, mutation) -> bytes:
    kind, where, blob, bit = mutation
    at = where % (len(data) + 1)
    if kind == "flip" and at < len(data):
        return data[:at] + bytes([data[at] ^ (1 << bit)]) + data[at + 1:]
    if kind == "truncate":
        return data[:at]
    if kind == "splice":
        return data[:at] + blob + data[at:]
    return data[:at] + blob + data[at + len(blob):]


def _exercise(path, canary) -> None:
    tracemalloc.start()
    try:
        assert sniff(path) is not None
        report = scan_path(path)
        assert report.verdict in ("safe", "suspicious", "dangerous", "unreadable")
        try:
            for tensor in iter_torch_tensors(path):
                assert tensor.array.flags.c_contiguous
        except ModelFileError:
            pass
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < MAX_PEAK_BYTES
    assert not canary.exists()


FUZZ = settings(max_examples=300, deadline=5000, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(data=st.binary(max_size=4096))
def test_random_bytes(tmp_path, data):
    path = tmp_path / "random.pt"
    path.write_bytes(data)
    _exercise(path, tmp_path / "CANARY")


@FUZZ
@given(index=st.integers(0, 100), steps=st.lists(mutations(), min_size=1, max_size=4))
def test_mutated_valid_and_hostile_files(tmp_path, seeds, index, steps):
    data = seeds[index % len(seeds)]
    for step in steps:
        data = _mutate(data, step)
    path = tmp_path / "mutated.pt"
    path.write_bytes(data)
    _exercise(path, tmp_path / "CANARY")


@FUZZ
@given(data=st.binary(max_size=512))
def test_restricted_reader_on_random_pickle_like_bytes(data):
    for candidate in (data, b"\x80\x02" + data, b"\x80\x04" + data + b"."):
        try:
            load_restricted(candidate)
        except ModelFileError:
            pass
