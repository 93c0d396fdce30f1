"""The layout of a safetensors file, byte for byte the one safetensors' own writer makes.

PURE: no Django, no torch, no I/O: the converter streams the data itself in `Layout.order`.
The same tensors and metadata give the same bytes as `safetensors.torch.save_file`, so a
conversion of a checkpoint can have the SHA256 of a .safetensors file published elsewhere:
- tensors ordered as the reference orders them, by dtype (widest first, in its fixed ranking)
  and then by name, so a checkpoint of one dtype has its keys sorted, and every tensor starts at a
  multiple of its element size (zero-copy loaders can map it);
- the header is compact JSON, `__metadata__` first (its keys sorted: the reference's order is a
  hash map's, so sorted is as good as any and repeatable), each entry's fields as the reference
  writes them (dtype, shape, data_offsets), and padded with spaces to a multiple of 8 so the data
  buffer starts 8-byte aligned.
"""
from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from workers.modelfiles.safetensors_reader import DTYPE_SIZES, MAX_HEADER_SIZE, SafetensorsError


@dataclass(frozen=True)
class Placed:
    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int  # offsets in the data buffer
    end: int


@dataclass(frozen=True)
class Layout:
    header: bytes               # the 8-byte length and the padded JSON: the file's first bytes
    order: tuple[Placed, ...]   # tensors in data-buffer order
    file_size: int


# The reference writer's ranking (safetensors' Dtype order, widest first); the order of the data.
REFERENCE_ORDER = ("U64", "I64", "F64", "C64", "F32", "U32", "I32", "BF16", "F16", "U16", "I16",
                   "F8_E4M3", "F8_E5M2", "I8", "U8", "BOOL")
_RANK = {dtype: i for i, dtype in enumerate(REFERENCE_ORDER)}
assert set(_RANK) == set(DTYPE_SIZES), "every dtype the reader knows needs its place in the order"


def safetensors_layout(tensors: Iterable[tuple[str, str, tuple[int, ...]]], metadata: dict[str, str]) -> Layout:
    """`tensors`: (name, dtype, shape). Names must be unique (the planner guarantees it)."""
    items = sorted(tensors, key=lambda t: (_RANK[t[1]], t[0]))
    placed, offset = [], 0
    for name, dtype, shape in items:
        size = math.prod(shape) * DTYPE_SIZES[dtype]
        placed.append(Placed(name, dtype, tuple(shape), offset, offset + size))
        offset += size
    if len({p.name for p in placed}) != len(placed):
        raise SafetensorsError("two tensors have the same name")
    parts = []
    if metadata:
        parts.append('"__metadata__":' + _json(dict(sorted(metadata.items()))))
    for p in placed:
        parts.append(f'{_json(p.name)}:{{"dtype":{_json(p.dtype)},"shape":{_json(list(p.shape))},'
                     f'"data_offsets":[{p.begin},{p.end}]}}')
    text = ("{" + ",".join(parts) + "}").encode("utf-8")
    text += b" " * (-len(text) % 8)
    if len(text) > MAX_HEADER_SIZE:
        raise SafetensorsError(f"the header would be {len(text):,} bytes, more than readers accept ({MAX_HEADER_SIZE:,})")
    head = struct.pack("<Q", len(text)) + text
    return Layout(header=head, order=tuple(placed), file_size=len(head) + offset)


def _json(value) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
