"""What the readers say about a file they cannot read: words a person can act on, never a bytes repr."""
from __future__ import annotations

import io
import json
import pickle
import struct
import zipfile

import pytest

from workers.modelfiles.analyse import analyse_path
from workers.modelfiles.fingerprint import fingerprint_path


def _safetensors(payload_len: int = 64) -> bytes:
    header = json.dumps({"w": {"dtype": "U8", "shape": [64], "data_offsets": [0, 64]}}).encode()
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + b"\x01" * payload_len


def _torch_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pickle.dumps({"a": 1}, protocol=2))
        z.writestr("archive/version", "3\n")
    return buf.getvalue()


def _analyse(tmp_path, name: str, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return analyse_path(path)


def test_a_truncated_safetensors_file_is_unreadable_and_says_how_much_is_there(tmp_path):
    result = _analyse(tmp_path, "cut.safetensors", _safetensors(payload_len=16))
    assert result.verdict == "unreadable" and result.fingerprint is None
    assert result.error == "truncated: 16 of 64 data bytes present — an incomplete download?"
    assert any(f["severity"] == "unreadable" and f["why"] == result.error for f in result.findings)


def test_a_safetensors_file_cut_inside_its_header_says_so(tmp_path):
    result = _analyse(tmp_path, "cut.safetensors", _safetensors()[:40])
    assert result.verdict == "unreadable"
    assert result.error.startswith("truncated: a safetensors file whose") and "incomplete download?" in result.error


def test_a_truncated_torch_zip_says_its_directory_is_missing(tmp_path):
    data = _torch_zip()
    result = _analyse(tmp_path, "cut.ckpt", data[: len(data) // 2])
    assert result.verdict == "unreadable"
    assert result.error == "truncated zip: the directory at the end of the file is missing — an incomplete download?"


def test_a_truncated_pickle_says_where_it_stops_in_words(tmp_path):
    result = _analyse(tmp_path, "cut.pt", pickle.dumps({"a": list(range(100))}, protocol=2)[:30])
    assert result.verdict == "unreadable"
    assert result.error == "truncated: the pickle ends inside a BININT1 instruction — an incomplete download?"


@pytest.mark.parametrize("data", [bytes(range(256)), b"\x00\x01garbage" * 10, b"@\x00\x00\x00\x00"])
def test_unrecognised_content_is_described_in_hex_not_as_a_bytes_repr(tmp_path, data):
    result = _analyse(tmp_path, "x.bin", data)
    assert result.verdict == "unreadable" and result.error
    text = result.error + " ".join(f["why"] for f in result.findings)
    assert "b'" not in text and "\\x" not in text
    assert "00 01" in result.error or "40 00" in result.error


def test_a_damaged_safetensors_header_is_unreadable_with_the_reason(tmp_path):
    bad = struct.pack("<Q", 16) + b"{not json!!!!!!}" + b"\0" * 8
    result = _analyse(tmp_path, "bad.safetensors", bad)
    assert result.verdict == "unreadable" and result.error.startswith("tensors could not be read: header is not valid JSON")


def test_a_readable_file_stays_safe_and_reports_fingerprint_progress(tmp_path):
    path = tmp_path / "ok.safetensors"
    path.write_bytes(_safetensors())
    seen = []
    fingerprint_path(path, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(64, path.stat().st_size)]
    calls = []
    result = analyse_path(path, progress=lambda done, total: calls.append(done))
    assert result.verdict == "safe" and result.error == "" and calls == [64]
