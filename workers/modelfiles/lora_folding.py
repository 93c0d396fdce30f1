"""A kohya Flux LoRA as diffusers' converter writes it: alphas folded into the weights (PURE).

diffusers' `_convert_kohya_flux_lora_to_diffusers` (loaders/lora_conversion_utils.py, 0.42.1) does
not keep a module's alpha: it multiplies the matrices by the forward pass's alpha / rank, split
between them (`_convert_to_ai_toolkit` / `_convert_to_ai_toolkit_cat`):

    scale = alpha / rank; scale_down, scale_up = scale, 1.0
    while scale_down * 2 < scale_up: scale_down *= 2; scale_up /= 2
    lora_A = lora_down * scale_down; lora_B = lora_up * scale_up

With alpha == rank that changes nothing, and lora_forms.py already links such a file and its
conversion. With any other alpha the conversion holds new values, so its content_id is not the
kohya file's. `folded_content_id` computes the id that conversion will have, bit for bit, from the
kohya file: the kohya side stores it (`Fingerprint.folded_id`) and matching links a file whose
content_id equals it ("converted, alphas folded into the weights").

Bit-exact with torch on the CPU: the product is computed in float32 (torch's opmath for F32, F16
and BF16) and rounded back to the tensor's dtype, nearest-even (casts.py). Where the factor comes
from differs between the two helpers and is mirrored: `_convert_to_ai_toolkit` (and the text
encoder loop) read the alpha with `.item()` and divide in double precision; the fused
`_convert_to_ai_toolkit_cat` divides the alpha tensor itself, so the scale is rounded to the alpha's
dtype first. The final layer (`assign_remaining_weights`) drops its alpha without scaling. F64 and
fp8 matrices are not folded (no folded id): nobody trains in them.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from workers.modelfiles.casts import as_f32, cast_chunk
from workers.modelfiles.lora_forms import alpha_value, fused_projection, lora_part
from workers.modelfiles.types import Tensor

# The kohya Flux names the converter handles; other kohya LoRAs (SD, SDXL) keep their alphas as
# network alphas when diffusers loads them, so nothing is folded there.
_FLUX_MARKERS = ("lora_unet_double_blocks_", "lora_unet_single_blocks_")
_FOLDABLE = frozenset({"F32", "F16", "BF16"})
_UNSCALED = ("denoiser:final.layer.",)  # assign_remaining_weights: alpha dropped, weights as they are


def fold_scales(scale: float) -> tuple[float, float]:
    """(scale_down, scale_up) from alpha / rank, as the converter splits it."""
    down, up = scale, 1.0
    while down * 2 < up:
        down *= 2
        up /= 2
    return down, up


def _rounded_to(value: float, dtype: str) -> float:
    """alpha / rank as the fused helper gets it: dividing an F16 / BF16 alpha tensor rounds the
    quotient to that dtype. Any other quotient reaches the product as a float32 (`scaled`)."""
    if dtype not in ("F16", "BF16"):
        return value
    narrow = cast_chunk(np.array([value], dtype=np.float32), "F32", dtype)
    return float(as_f32(narrow, dtype)[0])


def scaled(tensor: Tensor, factor: float) -> Tensor:
    """tensor * factor as torch computes it: in float32, rounded back to the tensor's dtype."""
    flat = np.asarray(tensor.array).reshape(-1)
    with np.errstate(all="ignore"):
        wide = as_f32(flat, tensor.dtype) * np.float32(factor)
    out = wide if tensor.dtype == "F32" else cast_chunk(wide, "F32", tensor.dtype)
    return Tensor(name=tensor.name, dtype=tensor.dtype, shape=tensor.shape, array=out.reshape(tensor.shape))


def folded_content_id(tensors: Callable[[], Iterable[Tensor]], *, builder_factory) -> str | None:
    """The content_id of diffusers' conversion of this kohya Flux LoRA, None when the file is no kohya
    Flux LoRA, when folding changes nothing (every alpha is its rank, or none is stored) or when it
    cannot be mirrored (F64 / fp8 matrices).
    `tensors()` streams the file; it is called twice (alphas and ranks first, then the values), so
    memory stays at one tensor. `builder_factory()` is fingerprint.ContentIdBuilder, which applies
    the same canonical forms (fused projections split) as the fingerprint."""
    alphas: dict[str, tuple[float, str]] = {}
    ranks: dict[str, int] = {}
    flux = False
    for t in tensors():
        flux = flux or t.name.startswith(_FLUX_MARKERS)
        part = lora_part(t.name)
        if part is None:
            continue
        if part.role == "alpha" and int(np.prod(t.shape, dtype=np.int64)) == 1:
            value = alpha_value(t)
            if value is not None:
                alphas[part.module] = (value, t.dtype)
        elif part.role == "down" and len(t.shape) >= 2:
            if t.dtype not in _FOLDABLE:
                return None
            ranks[part.module] = int(t.shape[0])
    if not flux:
        return None
    factors: dict[str, tuple[float, float]] = {}
    for module, (alpha, dtype) in alphas.items():
        rank = ranks.get(module)
        if not rank or module.startswith(_UNSCALED):
            continue
        # The fused helper divides the alpha tensor (its dtype), the others alpha.item() (a double).
        scale = _rounded_to(alpha / rank, dtype) if fused_projection(module) is not None else alpha / rank
        if scale != 1.0:
            factors[module] = fold_scales(scale)
    if not factors:
        return None
    builder = builder_factory()
    for t in tensors():
        part = lora_part(t.name)
        if part is not None and part.role == "alpha":
            continue  # folded in, or dropped (the converter writes no alphas)
        if part is not None and part.module in factors and part.role in ("down", "up"):
            down, up = factors[part.module]
            t = scaled(t, down if part.role == "down" else up)
        builder.add_tensor(t)
    return builder.content_id()


__all__ = ["fold_scales", "folded_content_id", "scaled"]
