"""safetensors headers are parsed a value at a time from the mapped file (json.loads of a 90 MB
header holds ~550 MB of objects): the same answers as json, as strict, with caps that bound memory."""
import json

import pytest

from tests.workers.modelfiles.builders import raw_safetensors
from workers.modelfiles import safetensors_reader
from workers.modelfiles.safetensors_reader import SafetensorsError, read_safetensors_header


HEADERS = [
    {"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}},
    {"__metadata__": {"format": "pt", "é\u2603": "x\\\"}{,:[]" * 50, "empty": ""},
     "a b": {"dtype": "U8", "shape": [], "data_offsets": [0, 1]},
     "z": {"dtype": "U8", "shape": [0, 3], "data_offsets": [1, 1]}},
    {"__metadata__": None, "w": {"dtype": "BF16", "shape": [1, 1, 1], "data_offsets": [0, 2]}},
    {},
]


@pytest.mark.parametrize("header", HEADERS)
@pytest.mark.parametrize("indent", [None, 3])
@pytest.mark.parametrize("window", [1, 7, 1 << 20])
def test_the_value_at_a_time_parse_reads_what_json_reads(tmp_path, monkeypatch, header, indent, window):
    monkeypatch.setattr(safetensors_reader, "_WINDOW", window)
    text = json.dumps(header, indent=indent, ensure_ascii=indent is None)
    size = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    path = tmp_path / "h.safetensors"
    path.write_bytes(raw_safetensors(text, b"\0" * size))
    parsed = read_safetensors_header(path)
    assert parsed.metadata == (header.get("__metadata__") or {})
    assert {e.name: [e.dtype, list(e.shape), [e.begin, e.end]] for e in parsed.tensors} == \
        {k: [v["dtype"], v["shape"], v["data_offsets"]] for k, v in header.items() if k != "__metadata__"}


@pytest.mark.parametrize("text, words", [
    ('{"w": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]},}', "expected a string key"),
    ('{"w": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}} x', "extra data"),
    ('{"w": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]} "v": 1}', "expected ',' or '}'"),
    ('{"w" {"dtype": "U8"}}', "':' after a key"),
    ('{"w": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}, "w": {"dtype": "U8", "shape": [0], '
     '"data_offsets": [1, 1]}}', "duplicate key"),
    ('{"__metadata__": {"a": "1", "a": "2"}}', "duplicate key"),
    ('{"__metadata__": {}, "__metadata__": {}}', "duplicate key"),
    ('{"__metadata__": {"a": 1}}', "not a string"),
    ('{"__metadata__": [], "w": 1}', "not an object"),
    ('{"w": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1e0]}}', "pair of integers"),
    ('{"w": NaN}', "constant"),
    ('{"w": "\\ud800"}', "entry is not an object"),
])
@pytest.mark.parametrize("window", [3, 1 << 20])
def test_the_value_at_a_time_parse_is_as_strict_as_before(tmp_path, monkeypatch, text, words, window):
    monkeypatch.setattr(safetensors_reader, "_WINDOW", window)
    path = tmp_path / "h.safetensors"
    path.write_bytes(raw_safetensors(text, b"\0"))
    with pytest.raises(SafetensorsError, match=words):
        read_safetensors_header(path)


def test_header_caps_on_metadata_entries_and_value_length(tmp_path, monkeypatch):
    monkeypatch.setattr(safetensors_reader, "MAX_METADATA_ENTRIES", 10)
    monkeypatch.setattr(safetensors_reader, "MAX_JSON_VALUE", 1000)
    monkeypatch.setattr(safetensors_reader, "_WINDOW", 64)
    many = tmp_path / "many.safetensors"
    many.write_bytes(raw_safetensors({"__metadata__": {str(n): "v" for n in range(11)}}))
    with pytest.raises(SafetensorsError, match="more than 10 __metadata__ entries"):
        read_safetensors_header(many)
    long = tmp_path / "long.safetensors"
    long.write_bytes(raw_safetensors({"__metadata__": {"v": "x" * 5000}}))
    with pytest.raises(SafetensorsError, match="longer than 1000 characters"):
        read_safetensors_header(long)


def test_too_many_tensors_stop_the_parse_early(tmp_path, monkeypatch):
    monkeypatch.setattr(safetensors_reader, "MAX_TENSORS", 100)
    header = {f"t{n}": {"dtype": "U8", "shape": [1], "data_offsets": [n, n + 1]} for n in range(1000)}
    path = tmp_path / "many.safetensors"
    path.write_bytes(raw_safetensors(header, b"\0" * 1000))
    with pytest.raises(SafetensorsError, match="more than 100 tensors"):
        read_safetensors_header(path)
