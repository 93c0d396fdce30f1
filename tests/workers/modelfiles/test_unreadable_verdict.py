"""A file whose format was recognised but whose data cannot be read is `unreadable`, with the
reason in words, whatever the container; a valid file we merely do not read is not."""
import io
import struct
import zipfile

import numpy as np
import torch

from tests.workers.modelfiles import hostile
from tests.workers.modelfiles.builders import raw_safetensors, sd_checkpoint, write_diffusers_folder
from workers.modelfiles.analyse import analyse_path


def _assert_words(text: str) -> None:
    assert text and "b'" not in text and "\\x" not in text
    assert " " in text  # a sentence, not an exception class name alone


def _unreadable(path, **kwargs):
    result = analyse_path(path, **kwargs)
    assert result.verdict == "unreadable", (result.verdict, result.error, result.findings)
    assert result.fingerprint is None
    _assert_words(result.error)
    assert any(f["severity"] == "unreadable" for f in result.findings)
    return result


def _zip(tmp_path, data_pkl: bytes, storage: bytes) -> object:
    entries = hostile.benign_zip_entries(data_pkl)
    entries[2] = ("archive/data/0", storage)
    return hostile.torch_zip(tmp_path / "m.pt", entries)


def test_a_torch_zip_whose_storage_is_shorter_than_its_tensor_is_unreadable(tmp_path):
    path = _zip(tmp_path, hostile.benign_data_pkl(numel=4), struct.pack("<2f", 1, 2))
    result = _unreadable(path)
    assert "storage '0' declares 16 bytes, file holds 8" in result.error


def test_a_torch_zip_whose_view_reaches_past_its_storage_is_unreadable(tmp_path):
    data_pkl = hostile.benign_data_pkl(numel=4).replace(b"(K\x04tq", b"(K\x09tq").replace(
        hostile.tup(hostile.i(4)) + hostile.tup(hostile.i(1)), hostile.tup(hostile.i(9)) + hostile.tup(hostile.i(1)))
    path = _zip(tmp_path, data_pkl, struct.pack("<4f", 1, 2, 3, 4))
    assert "view reaches past its storage" in _unreadable(path).error


def test_a_torch_zip_missing_a_storage_is_unreadable(tmp_path):
    entries = [e for e in hostile.benign_zip_entries() if e[0] != "archive/data/0"]
    path = hostile.torch_zip(tmp_path / "m.pt", entries)
    assert "missing entry 'archive/data/0'" in _unreadable(path).error


def test_overlapping_safetensors_tensors_are_unreadable(tmp_path):
    header = {"weight": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
              "bias": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}
    path = tmp_path / "o.safetensors"
    path.write_bytes(raw_safetensors(header, b"\0" * 8))
    assert "tensors overlap: 'bias' starts at data byte 4" in _unreadable(path).error


def test_a_cut_off_legacy_checkpoint_is_unreadable(tmp_path):
    path = tmp_path / "old.ckpt"
    torch.save({"w": torch.arange(64, dtype=torch.float32)}, path, _use_new_zipfile_serialization=False)
    path.write_bytes(path.read_bytes()[:-100])
    assert "incomplete download?" in _unreadable(path).error


def test_an_npz_array_shorter_than_its_shape_is_unreadable(tmp_path):
    buf = io.BytesIO()
    np.save(buf, np.arange(10, dtype="<f4"))
    with zipfile.ZipFile(tmp_path / "a.npz", "w", zipfile.ZIP_STORED) as z:
        z.writestr("x.npy", buf.getvalue()[:-8])
    assert "shorter than its shape" in _unreadable(tmp_path / "a.npz").error


def test_a_diffusers_folder_with_a_cut_off_weight_file_is_unreadable(tmp_path):
    root = write_diffusers_folder(tmp_path / "sd", sd_checkpoint())
    unet = root / "unet" / "diffusion_pytorch_model.safetensors"
    unet.write_bytes(unet.read_bytes()[:-1000])
    members = [p.relative_to(root).as_posix() for p in root.rglob("*.safetensors")]
    result = _unreadable(root, member_paths=members)
    assert result.error.startswith("truncated:")


def test_a_valid_file_with_a_newer_dtype_is_not_unreadable(tmp_path):
    path = tmp_path / "f4.safetensors"
    path.write_bytes(raw_safetensors({"a": {"dtype": "F4", "shape": [4], "data_offsets": [0, 2]}}, b"\0\0"))
    result = analyse_path(path)
    assert result.verdict == "safe" and result.fingerprint is None
    assert result.error.startswith("no tensor fingerprint:") and "F4" in result.error


def test_a_valid_but_compressed_torch_zip_is_not_unreadable(tmp_path):
    path = tmp_path / "rezipped.pt"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in hostile.benign_zip_entries():
            z.writestr(name, data)
    result = analyse_path(path)
    assert result.verdict == "safe", result.findings
    assert result.error.startswith("no tensor fingerprint:") and "compressed" in result.error
