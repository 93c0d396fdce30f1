"""Floating-point casts for the converter's --dtype fp16 / bf16, bit-exact with torch's `.to()`.

PURE: no Django, no torch. Values travel as the readers carry them (types.Tensor): little-endian
flat numpy arrays, BF16 as its raw uint16 bits. Every cast rounds to nearest, ties to even, as
torch does on CPU:
- to F16: numpy's float32 -> float16 cast (RNE, subnormals and overflow to inf as IEEE says);
- to BF16: the top 16 bits of the F32 after adding 0x7FFF plus the lowest kept bit (c10's
  round_to_nearest_even);
- F64 goes through F32 first, as torch does (c10::Half and c10::BFloat16 are built from a float), so
  an F64 model, its F32 copy and a torch-made cast all agree; F16 <-> BF16 widen to F32 exactly.
NaNs become the canonical quiet NaN: F16 0x7E00 with the sign kept (the fingerprint's precision
digest does the same, so a cast file still matches its source), BF16 0x7FC0 (c10's scalar rule).
F8 tensors and every non-float kind are never cast: widening fp8 would only grow the file, and the
fingerprint leaves them as they are.
"""
from __future__ import annotations

import numpy as np

from workers.modelfiles import scaled_fp8

CAST_TO = {"fp16": "F16", "bf16": "BF16"}
# What each target casts; the others are written as they are.
CAST_FROM = {"F16": frozenset({"F32", "F64", "BF16"}), "BF16": frozenset({"F32", "F64", "F16"})}
_F16_NAN = np.uint16(0x7E00)
_BF16_NAN = np.uint16(0x7FC0)


def output_dtype(dtype: str, mode: str, *, name: str = "") -> str:
    """The dtype a tensor of `dtype` is written as under --dtype `mode` (keep | fp16 | bf16). A ComfyUI
    scaled-fp8 scale (`name` says which) keeps its dtype: rounding it would change every weight it scales."""
    if mode == "keep" or scaled_fp8.role(name) is not None:
        return dtype
    target = CAST_TO[mode]
    return target if dtype in CAST_FROM[target] else dtype


def cast_chunk(flat: np.ndarray, dtype: str, target: str) -> np.ndarray:
    """`flat` (values of `dtype`, as carried) cast to `target`, as carried (F16 float16, BF16 uint16)."""
    if dtype == target:
        return flat
    wide = as_f32(flat, dtype)
    if target == "F16":
        return _f32_to_f16(wide)
    if target == "BF16":
        return _f32_to_bf16(wide)
    raise ValueError(f"no cast to {target}")


def as_f32(flat: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "F32":
        return flat
    if dtype == "BF16":
        return (flat.astype(np.uint32) << 16).view(np.float32)  # exact: BF16 is the top half of an F32
    with np.errstate(all="ignore"):  # F64 beyond F32's range becomes inf, as in torch
        return flat.astype(np.float32)  # F16 widens exactly; F64 rounds to nearest even


def _f32_to_f16(wide: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        out = wide.astype(np.float16)
    nan = np.isnan(wide)
    if nan.any():
        sign = (wide.view(np.uint32)[nan] >> 16).astype(np.uint16) & np.uint16(0x8000)
        out.view(np.uint16)[nan] = _F16_NAN | sign
    return out


def _f32_to_bf16(wide: np.ndarray) -> np.ndarray:
    bits = wide.view(np.uint32)
    rounded = bits + (np.uint32(0x7FFF) + ((bits >> 16) & np.uint32(1)))  # wraps only for NaNs, fixed below
    out = (rounded >> 16).astype(np.uint16)
    nan = np.isnan(wide)
    if nan.any():
        out[nan] = _BF16_NAN
    return out
