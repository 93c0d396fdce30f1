"""ComfyUI "scaled fp8" files: pair each weight with its per-tensor scale. PURE: no Django, no torch.

ComfyUI's convention (comfy/model_detection.py, comfy/ops.py `scaled_fp8_ops`): a `scaled_fp8` marker
tensor (its dtype names the fp8 kind), and next to a layer's fp8 `<layer>.weight` a scalar
`<layer>.scale_weight`; the weight ComfyUI computes with is `weight.to(dtype) * scale_weight`
(a missing scale counts as 1). `<layer>.scale_input` scales activations, not weights.

So the fingerprint digests a scaled weight as what it means, `f32(weight) * scale_weight` (see
fingerprint.py), and none of the scale tensors or the marker on their own: they are not weights, and
counting one F32 scalar per layer would also make the file look like an fp32 one. A scale that is not
one positive finite number is refused with an explained error rather than dropped.

Order: safetensors files written by the `safetensors` library keep wider dtypes first in the data
buffer, so F32 scales come before the fp8 weights they scale; a stream where a weight comes first
(a torch checkpoint's state-dict order) holds that weight until its scale arrives, within
`HOLD_BYTES`; past it the held weights are digested as stored, and a scale arriving later for one of
them is an error, not a silent "as stored".
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

import numpy as np

from workers.modelfiles.types import FLOAT_DTYPES, ModelFileError, Tensor

SCALE_WEIGHT = "scale_weight"
SCALE_INPUT = "scale_input"
MARKER = "scaled_fp8"
FP8_DTYPES = frozenset({"F8_E4M3", "F8_E5M2"})
HOLD_BYTES = 256 << 20  # weights held while waiting for a scale that may come later in the stream


class ScaleError(ModelFileError):
    """A scale tensor that cannot scale its weight."""


def role(name: str, shape: tuple[int, ...] | None = None) -> str | None:
    """"scale_weight", "scale_input" or "scaled_fp8" for the scaled-fp8 bookkeeping tensors, else None.
    Given its `shape`, a "scale" of more than one number is some model's own tensor of that name: not one."""
    leaf = name.rsplit(".", 1)[-1]
    if leaf == MARKER:
        return MARKER
    if leaf in (SCALE_WEIGHT, SCALE_INPUT) and "." in name and (shape is None or math.prod(shape) == 1):
        return leaf
    return None


def scale_value(tensor: Tensor) -> np.float32:
    """The scale as the F32 ComfyUI multiplies by; refused unless one positive finite float."""
    if tensor.dtype not in FLOAT_DTYPES - FP8_DTYPES:
        raise ScaleError(f"tensor {tensor.name[:200]!r}: a scale_weight must be one float number, "
                         f"got {tensor.dtype}{list(tensor.shape)}")
    raw = np.asarray(tensor.array).reshape(-1)[:1]
    if tensor.dtype == "BF16":
        value = (raw.astype(np.uint32) << 16).view(np.float32)[0]
    else:
        with np.errstate(all="ignore"):
            value = np.float32(raw.astype(np.float64)[0])
    if not (math.isfinite(value) and value > 0):
        raise ScaleError(f"tensor {tensor.name[:200]!r}: a scale_weight must be positive and finite, got {value!r}")
    return np.float32(value)


def paired(stream: Iterable[tuple[Tensor, str | None]]) -> Iterator[tuple[Tensor, str | None, np.float32 | None]]:
    """(tensor, component, scale) for every tensor of `stream`; the scale tensors and the marker come
    out with component None (not weights) and scale None. A float `<layer>.weight` gets the value of
    `<layer>.scale_weight` when the file has one, else None (digested as stored)."""
    scales: dict[str, np.float32] = {}
    held: dict[str, tuple[Tensor, str | None]] = {}
    held_bytes = 0
    unscaled: set[str] = set()  # fp8 weights digested as stored before any scale of theirs was seen
    for tensor, component in stream:
        kind = role(tensor.name, tensor.shape)
        if kind is not None:
            if kind == SCALE_WEIGHT:
                layer = tensor.name[: -len(SCALE_WEIGHT) - 1]
                if layer in scales:
                    raise ScaleError(f"tensor {tensor.name[:200]!r}: a second scale for one weight")
                scales[layer] = scale_value(tensor)
                if layer in unscaled:
                    raise ScaleError(f"tensor {tensor.name[:200]!r}: comes after its weight, further than the "
                                     f"{HOLD_BYTES >> 20} MiB this reader holds: the weight cannot be de-scaled")
                if layer in held:
                    weight, weight_component = held.pop(layer)
                    held_bytes -= weight.array.nbytes
                    yield weight, weight_component, scales[layer]
            yield tensor, None, None
            continue
        layer = tensor.name[: -len(".weight")] if tensor.name.endswith(".weight") else None
        if layer is None or component is None or tensor.dtype not in FLOAT_DTYPES:
            yield tensor, component, None
        elif layer in scales:
            yield tensor, component, scales[layer]
        elif tensor.dtype in FP8_DTYPES:  # its scale may come later
            held[layer] = (tensor, component)
            held_bytes += tensor.array.nbytes
            while held_bytes > HOLD_BYTES and held:
                first = next(iter(held))
                weight, weight_component = held.pop(first)
                held_bytes -= weight.array.nbytes
                unscaled.add(first)
                yield weight, weight_component, None
        else:
            unscaled.add(layer)
            yield tensor, component, None
    for weight, weight_component in held.values():
        yield weight, weight_component, None
