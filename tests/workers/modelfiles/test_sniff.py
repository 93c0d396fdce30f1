import json
import pickle
import struct
import tarfile
import zipfile

import numpy as np
import pytest
import torch

from tests.workers.modelfiles import hostile
from workers.modelfiles.sniff import read_npy_header, read_zip_directory, sniff
from workers.modelfiles.types import ModelFileError


def _safetensors_bytes() -> bytes:
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    return struct.pack("<Q", len(header)) + header + struct.pack("<2f", 1, 2)


@pytest.mark.parametrize("name", ["model.safetensors", "model.ckpt", "model.bin", "noext"])
def test_torch_zip_is_recognised_whatever_its_name(tmp_path, name):
    path = tmp_path / name
    torch.save({"w": torch.ones(2)}, path)
    assert sniff(path) == "torch-zip"


def test_legacy_torch_files_are_recognised_at_protocols_2_and_4(tmp_path):
    for protocol in (2, 4):
        path = tmp_path / f"legacy{protocol}.pt"
        torch.save({"w": torch.ones(2)}, path, _use_new_zipfile_serialization=False, pickle_protocol=protocol)
        assert sniff(path) == "torch-legacy"


def test_safetensors_named_ckpt_is_safetensors(tmp_path):
    path = tmp_path / "model.ckpt"
    path.write_bytes(_safetensors_bytes())
    assert sniff(path) == "safetensors"


def test_safetensors_header_longer_than_file_is_not_safetensors(tmp_path):
    path = tmp_path / "x.safetensors"
    path.write_bytes(struct.pack("<Q", 10_000) + b'{"a": 1}')
    assert sniff(path) == "unknown"


def test_numpy_files(tmp_path):
    np.save(tmp_path / "a.npy", np.arange(3))
    np.savez(tmp_path / "b.npz", a=np.arange(3), b=np.ones(2))
    np.savez_compressed(tmp_path / "c.npz", a=np.arange(3))
    assert sniff(tmp_path / "a.npy") == "npy"
    assert sniff(tmp_path / "b.npz") == "npz"
    assert sniff(tmp_path / "c.npz") == "npz"


def test_zip_without_data_pkl_or_with_mixed_entries_is_plain_zip(tmp_path):
    path = tmp_path / "x.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("a.npy", b"x")
        z.writestr("readme.txt", b"x")
    assert sniff(path) == "zip"


def test_data_pkl_under_any_prefix_makes_a_torch_zip(tmp_path):
    path = tmp_path / "x.zip"
    hostile.torch_zip(path, [("whatever/deep/data.pkl", hostile.benign_data_pkl())])
    assert sniff(path) == "torch-zip"


def test_zip64_central_directory_is_read(tmp_path):
    path = tmp_path / "x.pt"
    with zipfile.ZipFile(path, "w") as z:
        with z.open("archive/data.pkl", "w", force_zip64=True) as f:
            f.write(hostile.benign_data_pkl())
    raw = path.read_bytes()
    assert [e.name for e in read_zip_directory(raw)] == ["archive/data.pkl"]
    assert sniff(path) == "torch-zip"


@pytest.mark.parametrize("magic, expected", [
    (b"GGUF\x03\x00\x00\x00" + b"\x00" * 32, "gguf"),
    (b"7z\xbc\xaf\x27\x1c\x00\x04" + b"\x00" * 32, "7z"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "unknown"),
    (b"hello world, not a model\n", "unknown"),
    (b"", "unknown"),
    (b"\x80", "unknown"),
])
def test_magic_bytes(tmp_path, magic, expected):
    path = tmp_path / "f.pt"
    path.write_bytes(magic)
    assert sniff(path) == expected


@pytest.mark.parametrize("protocol", [0, 1, 2, 4, 5])
def test_bare_pickles_at_every_protocol(tmp_path, protocol):
    path = tmp_path / "p.bin"
    path.write_bytes(pickle.dumps({"a": [1, 2.5, "x"], "b": None}, protocol=protocol))
    assert sniff(path) == "pickle"


def test_tar_checkpoint(tmp_path):
    path = hostile.tar_checkpoint(tmp_path / "t.pt", tmp_path / "canary")
    assert tarfile.is_tarfile(path)
    assert sniff(path) == "torch-tar"


def test_directories(tmp_path):
    (tmp_path / "pipe").mkdir()
    (tmp_path / "pipe" / "model_index.json").write_text("{}")
    (tmp_path / "other").mkdir()
    assert sniff(tmp_path / "pipe") == "diffusers"
    assert sniff(tmp_path / "other") == "unknown"


def test_unreadable_path_raises_model_file_error(tmp_path):
    with pytest.raises(ModelFileError):
        sniff(tmp_path / "missing.pt")


def test_truncated_zip_is_still_a_zip_not_a_crash(tmp_path):
    path = tmp_path / "cut.pt"
    torch.save({"w": torch.ones(2)}, path)
    path.write_bytes(path.read_bytes()[:200])
    assert sniff(path) == "zip"


def test_npy_header_parsed_as_literal(tmp_path):
    path = tmp_path / "a.npy"
    np.save(path, np.zeros((2, 3), dtype=">i2", order="F"))
    header = read_npy_header(path.read_bytes())
    assert header.shape == (2, 3)
    assert header.dtype == np.dtype(">i2")
    assert header.fortran_order is True


def test_npy_header_that_is_code_is_refused():
    header = b"__import__('os').system('true')"
    raw = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header
    with pytest.raises(ModelFileError):
        read_npy_header(raw)


def test_npy_descr_that_numpy_parses_as_code_is_a_model_file_error():
    # np.dtype(",") raises SyntaxError (numpy reads comma lists of dtypes with its own parser): found by
    # the fuzz test; every reader error must be a ModelFileError.
    from workers.modelfiles.types import ModelFileError

    header = b"{'descr': ',', 'fortran_order': False, 'shape': (1,), }"
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    raw = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + b"\x00" * 8
    with pytest.raises(ModelFileError, match="bad descr"):
        read_npy_header(raw)
