import struct

import numpy as np
import pytest
import torch

from tests.workers.modelfiles import hostile
from tests.workers.modelfiles.tensor_zoo import benign_tensors
from workers.modelfiles.torch_reader import iter_torch_tensors
from workers.modelfiles.types import ModelFileError


def _as_numpy(t: torch.Tensor) -> np.ndarray:
    """The reference values, computed by torch itself (bf16/fp8 as raw bits)."""
    t = t.detach().contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(np.uint16)
    if t.dtype in (torch.float8_e4m3fn, torch.float8_e5m2):
        return t.view(torch.uint8).numpy()
    return t.numpy()


def _read(path) -> dict:
    return {t.name: t for t in iter_torch_tensors(path)}


def _assert_same(read: dict, expected: dict) -> None:
    assert set(read) == set(expected)
    for name, tensor in expected.items():
        got = read[name]
        reference = _as_numpy(tensor)
        assert got.shape == tuple(tensor.shape), name
        assert got.array.dtype == reference.dtype, name
        assert got.array.flags.c_contiguous
        np.testing.assert_array_equal(got.array, reference, err_msg=name)


def _zoo() -> dict:
    return benign_tensors()


@pytest.mark.parametrize("zip_format", [True, False])
def test_reads_every_dtype_and_view_like_torch(tmp_path, zip_format):
    tensors = _zoo()
    if not zip_format:  # the legacy format predates these dtypes
        for name in ("f8", "u16"):
            tensors.pop(name)
    path = tmp_path / "zoo.pt"
    torch.save(tensors, path, _use_new_zipfile_serialization=zip_format)
    read = _read(path)
    _assert_same(read, tensors)
    assert read["bf16"].dtype == "BF16"
    if zip_format:
        assert read["f8"].dtype == "F8_E4M3"


def test_sd_style_checkpoint_with_numpy_scalar_and_parameter(tmp_path):
    w = torch.randn(2, 2)
    path = tmp_path / "sd.ckpt"
    torch.save({"state_dict": {"model.diffusion_model.w": w, "p": torch.nn.Parameter(torch.ones(3))},
                "global_step": np.int64(470000), "epoch": 5}, path)
    _assert_same(_read(path), {"state_dict.model.diffusion_model.w": w, "state_dict.p": torch.ones(3)})


@pytest.mark.parametrize("zip_format", [True, False])
def test_a_saved_module_state_dict_reads_like_torch(tmp_path, zip_format):
    # torch.save(model.state_dict()) - pytorch_model.bin, most .pt/.pth - pickles an OrderedDict
    # whose `_metadata` attribute travels as BUILD state; it was refused as "BUILD on OrderedDict".
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    path = tmp_path / "pytorch_model.bin"
    torch.save(model.state_dict(), path, _use_new_zipfile_serialization=zip_format)
    assert hasattr(model.state_dict(), "_metadata")
    _assert_same(_read(path), torch.load(path, weights_only=True))


def test_lists_are_flattened_by_index(tmp_path):
    a, b = torch.ones(1), torch.zeros(2)
    path = tmp_path / "l.pt"
    torch.save({"layers": [a, {"x": b}]}, path)
    _assert_same(_read(path), {"layers.0": a, "layers.1.x": b})


def test_lightning_like_checkpoint_is_suspicious_but_readable(tmp_path):
    path, expected = hostile.lightning_like_checkpoint(tmp_path / "l.ckpt", tmp_path)
    _assert_same(_read(path), expected)


def test_numpy_files(tmp_path):
    a = np.arange(12, dtype=">f4").reshape(3, 4)
    f = np.asfortranarray(np.arange(6, dtype=np.int16).reshape(2, 3))
    np.save(tmp_path / "a.npy", a)
    np.savez(tmp_path / "plain.npz", a=a, f=f)
    np.savez_compressed(tmp_path / "packed.npz", a=a, f=f)
    only = list(iter_torch_tensors(tmp_path / "a.npy"))
    assert len(only) == 1 and only[0].dtype == "F32" and only[0].array.dtype == np.dtype("<f4")
    np.testing.assert_array_equal(only[0].array, a)
    for name in ("plain.npz", "packed.npz"):
        read = _read(tmp_path / name)
        assert set(read) == {"a", "f"}
        np.testing.assert_array_equal(read["f"].array, f)
        assert read["f"].array.flags.c_contiguous


def test_bare_pickle_yields_nothing_but_is_not_an_error(tmp_path):
    path = tmp_path / "p.pkl"
    path.write_bytes(hostile.pickle_of(b"}"))
    assert list(iter_torch_tensors(path)) == []


# --- torch's zip rules, stricter -------------------------------------------------------

def test_hand_built_zip_reads_like_torch_would(tmp_path):
    path = hostile.torch_zip(tmp_path / "ok.pt", hostile.benign_zip_entries())
    (tensor,) = list(iter_torch_tensors(path))
    assert tensor.name == "w"
    np.testing.assert_array_equal(tensor.array, np.array([1, 2, 3, 4], dtype=np.float32))


def test_big_endian_byteorder_entry_is_honoured(tmp_path):
    entries = hostile.benign_zip_entries()
    entries[1] = ("archive/byteorder", b"big")
    entries[2] = ("archive/data/0", struct.pack(">4f", 1, 2, 3, 4))
    path = hostile.torch_zip(tmp_path / "be.pt", entries)
    (tensor,) = list(iter_torch_tensors(path))
    np.testing.assert_array_equal(tensor.array, np.array([1, 2, 3, 4], dtype="<f4"))


def test_entry_outside_the_prefix_is_refused(tmp_path):
    path = hostile.torch_zip(tmp_path / "x.pt", hostile.benign_zip_entries() + [("other/readme", b"hi")])
    with pytest.raises(ModelFileError, match="outside"):
        list(iter_torch_tensors(path))


def test_storage_shorter_than_declared_is_refused(tmp_path):
    path = hostile.torch_zip(tmp_path / "x.pt", hostile.benign_zip_entries(hostile.benign_data_pkl(numel=5)))
    with pytest.raises(ModelFileError, match="declares"):
        list(iter_torch_tensors(path))


def _zip_with_view(tmp_path, *, offset, size, stride):
    h = hostile
    storage = h.tup(h.s("storage"), h.glob("torch", "FloatStorage"), h.s("0"), h.s("cpu"), h.i(4)) + b"Q"
    tensor = h.call(h.glob("torch._utils", "_rebuild_tensor_v2"), storage, h.i(offset) if offset >= 0 else
                    b"J" + struct.pack("<i", offset), h.tup(*map(h.i, size)),
                    h.tup(*(h.i(s) if s >= 0 else b"J" + struct.pack("<i", s) for s in stride)),
                    b"\x89", h.call(h.glob("collections", "OrderedDict")))
    pkl = h.pickle_of(b"}" + h.s("w") + tensor + b"s")
    return h.torch_zip(tmp_path / "v.pt", h.benign_zip_entries(pkl))


@pytest.mark.parametrize("offset, size, stride", [
    (3, (2,), (1,)),          # one element past the end
    (0, (2, 3), (3, 1)),      # 6 elements from a 4-element storage
    (-1, (2,), (1,)),         # negative offset
    (3, (2,), (-1,)),         # negative stride
])
def test_views_outside_their_storage_are_refused(tmp_path, offset, size, stride):
    path = _zip_with_view(tmp_path, offset=offset, size=size, stride=stride)
    with pytest.raises(ModelFileError):
        list(iter_torch_tensors(path))


def test_view_inside_its_storage_is_read(tmp_path):
    path = _zip_with_view(tmp_path, offset=1, size=(2,), stride=(2,))
    (tensor,) = list(iter_torch_tensors(path))
    np.testing.assert_array_equal(tensor.array, np.array([2, 4], dtype=np.float32))


def test_zero_stride_view_larger_than_the_file_is_refused(tmp_path):
    path = _zip_with_view(tmp_path, offset=0, size=(100_000, 100), stride=(0, 0))
    with pytest.raises(ModelFileError, match="larger than the file"):
        list(iter_torch_tensors(path))


def test_dangerous_file_is_refused_before_any_reading(tmp_path):
    canary = tmp_path / "CANARY"
    path = hostile.zip_duplicate_entries(tmp_path / "d.pt", canary)
    with pytest.raises(ModelFileError, match="dangerous"):
        list(iter_torch_tensors(path))
    assert not canary.exists()


def test_memo_built_graph_that_doubles_each_level_is_refused_quickly(tmp_path):
    dag = b"]\x94"
    for n in range(60):
        dag += b"0(h" + bytes([n]) + b"h" + bytes([n]) + b"l\x94"  # pop the last level, build the next
    pkl = hostile.pickle_of(b"}" + hostile.s("dag") + dag + b"s", protocol=4)
    path = hostile.torch_zip(tmp_path / "dag.pt", hostile.benign_zip_entries(pkl))
    from workers.modelfiles import torch_reader
    torch_reader.MAX_NODES, saved = 10_000, torch_reader.MAX_NODES
    try:
        with pytest.raises(ModelFileError, match="containers and tensors"):
            list(iter_torch_tensors(path))
    finally:
        torch_reader.MAX_NODES = saved


def test_tied_weights_keep_both_names(tmp_path):
    w = torch.randn(2, 2)
    path = tmp_path / "tied.pt"
    torch.save({"embed": w, "lm_head": w}, path)
    _assert_same(_read(path), {"embed": w, "lm_head": w})
