"""The layout of a safetensors file the strict reader (and every other one) accepts.

PURE: no Django, no torch, no I/O: the converter streams the data itself in `Layout.order`.
- The header is JSON with its keys sorted (tensors, their fields and `__metadata__` alike), so the
  same tensors and metadata always give the same bytes, and padded with spaces to a multiple of 8
  as the reference writer does, so the data buffer starts 8-byte aligned.
- The data is ordered as the reference writer orders it: largest element size first, then by name,
  so every tensor starts at a multiple of its element size (zero-copy loaders can map it).
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


def safetensors_layout(tensors: Iterable[tuple[str, str, tuple[int, ...]]], metadata: dict[str, str]) -> Layout:
    """`tensors`: (name, dtype, shape). Names must be unique (the planner guarantees it)."""
    items = sorted(tensors, key=lambda t: (-DTYPE_SIZES[t[1]], t[0]))
    placed, offset = [], 0
    for name, dtype, shape in items:
        size = math.prod(shape) * DTYPE_SIZES[dtype]
        placed.append(Placed(name, dtype, tuple(shape), offset, offset + size))
        offset += size
    header: dict = {p.name: {"dtype": p.dtype, "shape": list(p.shape), "data_offsets": [p.begin, p.end]}
                    for p in placed}
    if len(header) != len(placed):
        raise SafetensorsError("two tensors have the same name")
    if metadata:
        header["__metadata__"] = dict(metadata)
    text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    if len(text) > MAX_HEADER_SIZE:
        raise SafetensorsError(f"the header would be {len(text):,} bytes, more than readers accept ({MAX_HEADER_SIZE:,})")
    head = struct.pack("<Q", len(text)) + text
    return Layout(header=head, order=tuple(placed), file_size=len(head) + offset)
