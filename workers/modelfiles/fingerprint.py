"""Tensor-content fingerprint: an identity that survives renaming, format
conversion and precision changes.

PURE: no Django, no torch.

Per tensor, two digests (BLAKE3, 16 bytes):
- content: (dtype, shape without size-1 dims, little-endian C-order bytes).
  Dropping size-1 dims makes a VAE attention 1x1 conv [C, C, 1, 1] equal to
  the linear [C, C] a diffusers conversion stores.
- precision: the same after casting floating tensors to F16 with
  round-to-nearest-even (bit-exact with numpy's and torch's casts; BF16
  exactly widened to F32 first; F64 through F32, the double rounding torch's
  .half() does, so F64, F32 and torch-made F16 copies agree; every NaN
  becomes the canonical quiet NaN). An F16 tensor's
  precision digest therefore equals its content digest, and an fp32 model
  and its fp16 export share all precision digests. F8 tensors are left as they
  are (their precision digest is their content digest): an fp8 quantisation
  rounds differently from fp16, so casting could not link them anyway (the fp8 ids below do).
  Likewise fp32 and bf16 copies do not share precision digests (bf16 keeps
  3 fewer mantissa bits than fp16); bf16 and fp16 copies of a bf16 model do.
Names never enter a digest. They are used for two things only:
- ignoring buffers that are not weights (`is_ignored_key`), so a single-file
  checkpoint and its diffusers conversion count the same tensors;
- naming the component a tensor belongs to (`component_for_key`).

`content_id` / `precision_id` digest the sorted multiset of per-tensor hex
digests, so tensor order, key names, and the split into files or components
do not matter.

Conversions that change tensors (fused q/k/v split by diffusers, Flux's
fused single-block linear1, swapped shift/scale halves, OpenCLIP's transposed
text_projection) are undone before digesting: `canonical_forms.canonical_parts`
replaces such a tensor by its canonical parts, chosen from its name by one
rule table per family. A third digest per float tensor, `bf16`, casts F32/F64
to BF16 (round-to-nearest-even, bit-exact with torch): `bf16_id` links an fp32
model and its bf16 export, which `precision_id` (an fp16 cast) cannot.
LoRA tensors go through `lora_forms.LoraForms` instead (a kohya file and its PEFT / diffusers copy
share ids): an alpha equal to its module's rank is left out (counted in `ignored_tensors`), any other
alpha is digested in the "lora_alpha" component, fused Flux LoRA projections are split as diffusers'
converters split them. A PEFT / diffusers file keeps its alphas in a config instead (safetensors
metadata or adapter_config.json, `lora_alpha_config`): read for the modules without an alpha tensor,
so the copy digests the same "lora_alpha" component as the kohya file it came from.
A fourth, `fp8`, casts every wider float (F32/F64/BF16/F16) to float8_e4m3fn exactly as torch's
`.to(torch.float8_e4m3fn)` does (RNE, saturating at +-448): `fp8_id` links any float copy and its plain
fp8 cast. A fifth, `e5m2`, does the same for float8_e5m2 (RNE, overflow to inf, as torch): `e5m2_id`
links any float copy and its e5m2 cast; the two fp8 kinds are never cast into each other (each keeps
bits the other rounds away). An fp8 file's own tensors are their fp8 / e5m2 digest. All five casts are
one table-driven narrowing (narrowing.py).

ComfyUI "scaled fp8" files (an fp8 `<layer>.weight`, a scalar `<layer>.scale_weight`, maybe
`<layer>.scale_input`, a `scaled_fp8` marker: scaled_fp8.py) are digested as the weights ComfyUI
computes with, f32(weight) * scale_weight, cast like any F32 tensor; the content digest covers the
stored values and their scale, so a wrong or missing scale is other content and other weights. The
scale tensors and the marker are not digested on their own. What this links: a scaled file and its
dequantised fp16 / bf16 exports (precision_id / bf16_id), and copies of it. What it cannot link: the
scaled file and its full-precision source. weight = fp8(w / s) puts the values on the fp8 grid scaled
by s (absmax / 448, not a power of two), which no cast of w lands on, so no exact digest of w can meet
it; that needs a comparison within the fp8 rounding error, which digests cannot do.
Not linked either: SD 2.x text encoders, whose diffusers conversion also drops the last layer.
"""
from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import blake3
import numpy as np

from workers.modelfiles import scaled_fp8
from workers.modelfiles.canonical_forms import canonical_parts
from workers.modelfiles.lora_forms import ALPHA_COMPONENT, Emitted, LoraForms
from workers.modelfiles.narrowing import (
    BF16, F8_E4M3, F16, FloatFormat, FourNarrower, Narrower, widen_to_f32_bits,
)
from workers.modelfiles.safetensors_reader import NUMPY_DTYPES, iter_safetensors_tensors, read_safetensors_header
from workers.modelfiles.tied_weights import TiedWeights
from workers.modelfiles.types import ModelFileError, Tensor

# 2: canonical tensor forms (canonical_forms.py) and the bf16 precision id; 3: the fp8 (e4m3fn) id;
# 4: the fp8 e5m2 id, ComfyUI scaled fp8 weights digested de-scaled, LoRA canonical forms (lora_forms.py:
# neutral alphas dropped, others in "lora_alpha"; fused Flux LoRA projections split) and tied weights
# counted once (tied_weights.py: T5's embed_tokens beside shared).
# 5: a PEFT / diffusers LoRA's alphas read from its config (safetensors metadata or adapter_config.json,
# lora_alpha_config.py), so its lora_alpha component equals the kohya file's it was converted from;
# a kohya Flux LoRA with alphas other than its ranks gets folded_id (lora_folding.py).
# Older fingerprints (stored rows, older push clients) still load; `manage.py refingerprint` recomputes them.
FINGERPRINT_VERSION = 5
READABLE_VERSIONS = frozenset({1, 2, 3, 4, 5})
# Versions whose ids are still those of the current one except for files of these kinds (what the
# versions after them changed): refingerprint leaves the others alone instead of reading every file again.
CURRENT_EXCEPT_KINDS = {4: frozenset({"lora_peft", "lora", "lora_kohya"})}
DIGEST_BYTES = 16
_TENSOR_DOMAIN = b"modelxref/tensor/v1\n"
_SET_DOMAIN = b"modelxref/tensor-multiset/v1\n"
_CAST_TO_F16 = frozenset({"F32", "F64", "BF16"})
_CAST_TO_BF16 = frozenset({"F32", "F64"})  # BF16 is already there; F16 / F8 are not cast (they hold less or other bits)
# Every wider float is cast to e4m3fn; F8_E4M3 is already there; F8_E5M2 is not cast (an e5m2 copy
# rounds to 2 mantissa bits, so casting it could never meet the e4m3fn cast of its source).
_CAST_TO_FP8 = frozenset({"F32", "F64", "BF16", "F16"})
# The same for e5m2; an F8_E4M3 tensor is not cast either (e5m2 keeps one mantissa bit fewer: a double
# rounding through e4m3fn would not meet the direct e5m2 cast of the source).
_CAST_TO_E5M2 = _CAST_TO_FP8
_CHUNK_ELEMENTS = 1 << 18  # cast in 256K-element pieces: scratch stays in cache
_THREAD_MIN_BYTES = 4 << 20  # below this, a worker thread costs more than it saves

PICKLE_FORMATS = frozenset({"torch-zip", "torch-legacy", "torch-tar", "pickle"})
# Diffusers components that single-file checkpoints never hold: skipped so a
# folder and the checkpoint it was converted from share one content_id.
DIFFUSERS_SKIPPED_COMPONENTS = frozenset({"safety_checker", "feature_extractor", "image_encoder"})


class FingerprintError(ModelFileError):
    """A fingerprint (or its JSON form) cannot be computed or parsed."""


# --- which tensors count, and where they belong ----------------------------

# Wrappers some trainers put around a whole state dict; they say nothing about the weights.
_WRAPPER_PREFIXES = ("state_dict.", "module.", "model.module.")

# LDM/SGM noise-schedule buffers stored at the top level of single-file
# checkpoints; a diffusers folder keeps the schedule as scheduler_config.json.
SCHEDULE_BUFFERS = frozenset({
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod", "posterior_variance",
    "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
    "logvar", "lvlb_weights",
})
# Last name segments of buffers that converters and newer library versions drop:
# HF text models' position_ids (non-persistent since transformers 4.31), BatchNorm's
# step counter, CLIP's contrastive temperature (unused by a text encoder).
IGNORED_LEAVES = frozenset({"position_ids", "num_batches_tracked", "logit_scale"})
# model_ema.*: the EMA copy kept next to the weights in training checkpoints
# (pruned and converted files keep one set); first_stage_model.loss.*: the VAE's
# training discriminator/LPIPS; denoiser.*: SGM's sigma schedule buffers; the
# rest: PyTorch Lightning training state saved next to "state_dict".
IGNORED_PREFIXES = (
    "model_ema.", "first_stage_model.loss.", "denoiser.",
    "optimizer_states.", "lr_schedulers.", "callbacks.", "loops.", "hyper_parameters.",
)


def _strip_wrappers(name: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if name.startswith(prefix):
                name, changed = name[len(prefix):], True
    return name


def is_ignored_key(name: str) -> bool:
    """True for buffers that are not model weights (see the module docstring)."""
    name = _strip_wrappers(name)
    if name in SCHEDULE_BUFFERS or name.startswith(IGNORED_PREFIXES):
        return True
    return name.rsplit(".", 1)[-1] in IGNORED_LEAVES


_LORA_PREFIX_RE = re.compile(r"^lora_(unet|te\d?|transformer)_")
_LORA_PART_RE = re.compile(r"(^|\.)(lora_down|lora_up|lora_A|lora_B|lora_mid|lora\.down|lora\.up|lora_linear_layer"
                           r"|hada_w\d_[ab]|lokr_w\d)(\.|$)|_lora\d*\.(down|up)\.weight$")
# First segment under model.diffusion_model. of DiT-style models (Flux, SD3, PixArt...).
_DIT_SEGMENTS = frozenset({
    "double_blocks", "single_blocks", "img_in", "txt_in", "time_in", "vector_in", "guidance_in",
    "final_layer", "joint_blocks", "x_embedder", "context_embedder", "t_embedder", "y_embedder",
    "transformer_blocks", "single_transformer_blocks", "time_text_embed", "pos_embed",
})
_UNET_SEGMENTS = frozenset({
    "input_blocks", "middle_block", "output_blocks", "time_embed", "label_emb", "out",  # LDM
    "down_blocks", "up_blocks", "mid_block", "conv_in", "conv_out", "conv_norm_out",  # diffusers
    "time_embedding", "add_embedding", "class_embedding", "encoder_hid_proj",
})
_VAE_SEGMENTS = frozenset({"encoder", "decoder", "quant_conv", "post_quant_conv"})
# ComfyUI all-in-one checkpoints (Flux, SD3): text_encoders.<name>.transformer.* -> component.
_COMFY_TEXT_ENCODERS = {"clip_l": "text_encoder", "clip_g": "text_encoder_2", "t5xxl": "t5xxl"}
# Keys of a bare HF T5EncoderModel (the text_encoder_2 of Flux, text_encoder_3 of SD3).
_T5_PREFIXES = ("encoder.block.", "encoder.final_layer_norm.", "encoder.embed_tokens.", "shared.")
_EMBEDDER_RE = re.compile(r"^conditioner\.embedders\.\d+\.(?P<kind>transformer|model)\.")


def component_for_key(name: str) -> str:
    """Which model part a single-file key belongs to.

    Returns "unet", "transformer", "vae", "text_encoder", "text_encoder_2",
    "t5xxl", "lora" or "other". Names follow the diffusers subfolders of the same
    pipeline, so a checkpoint's components line up with a converted folder's:
    - SD 1.x/2.x: model.diffusion_model.* unet, first_stage_model.* vae,
      cond_stage_model.* text_encoder;
    - SDXL: conditioner.embedders.N.transformer.* (HF CLIP-L) text_encoder,
      conditioner.embedders.N.model.* (OpenCLIP bigG) text_encoder_2: by kind,
      not index, because the refiner's only embedder 0 is bigG (its
      diffusers folder calls it text_encoder_2);
    - Flux / SD3 (DiT blocks, bare or under model.diffusion_model.) transformer;
      vae.* / ae.* and bare encoder./decoder. VAE keys vae;
      ComfyUI all-in-one text_encoders.clip_l.* text_encoder (the CLIP-L slot of
      SD 1.x, SDXL and Flux alike, so one standalone clip_l file matches all three),
      clip_g.* text_encoder_2 (SDXL's and SD3's bigG slot);
    - T5 is "t5xxl" wherever it is (bare encoder.block.* / shared.* of a standalone
      t5xxl file, text_encoders.t5xxl.*, a diffusers folder's text_encoder_2 (Flux)
      or text_encoder_3 (SD3): see `component_for_folder_key`), because its diffusers
      slot differs between families while the weights do not;
    - LoRA / LyCORIS keys (lora_unet_*, lora_te*_*, *.lora_down.*, *.lora_A.*,
      ...) are one "lora" component: a LoRA file is an adapter, and none of
      its tensors can match a base model's.
    """
    name = _strip_wrappers(name)
    if _LORA_PREFIX_RE.match(name) or _LORA_PART_RE.search(name):
        return "lora"
    if name.startswith(("model.diffusion_model.", "model_ema.")):
        rest = name.split(".", 2)[2] if name.startswith("model.") else ""
        return "transformer" if rest.split(".", 1)[0] in _DIT_SEGMENTS else "unet"
    if name.startswith(("first_stage_model.", "vae.", "ae.")):
        return "vae"
    if name.startswith("cond_stage_model."):
        return "text_encoder"
    if m := _EMBEDDER_RE.match(name):
        return "text_encoder" if m["kind"] == "transformer" else "text_encoder_2"
    if name.startswith("text_encoders."):
        kind = name.split(".", 2)[1] if name.count(".") >= 2 else ""
        return _COMFY_TEXT_ENCODERS.get(kind, "other")
    first = name.split(".", 1)[0]
    if first in _DIT_SEGMENTS:
        return "transformer"
    if _is_t5_key(name):  # bare T5 encoder
        return "t5xxl"
    if first in _VAE_SEGMENTS:
        return "vae"
    if first in _UNET_SEGMENTS:
        return "unet"
    if first in ("text_model", "text_projection"):  # bare HF CLIP text model (WithProjection keeps the projection)
        return "text_encoder"
    return "other"


def _is_t5_key(name: str) -> bool:
    return name.startswith(_T5_PREFIXES)


def component_for_folder_key(folder: str, name: str) -> str:
    """A diffusers folder's component for a tensor of its `folder` subfolder: the subfolder's name,
    except a T5 encoder, which is "t5xxl" whichever slot holds it (Flux's text_encoder_2, SD3's
    text_encoder_3), so it matches a standalone t5xxl file and an all-in-one checkpoint's."""
    if folder.startswith("text_encoder") and _is_t5_key(_strip_wrappers(name)):
        return "t5xxl"
    return folder


# --- results ---------------------------------------------------------------

@dataclass(frozen=True)
class TensorDigest:
    content: str  # hex
    precision: str  # hex; == content for non-float and F16/F8 tensors
    nbytes: int  # bytes as stored
    component: str
    precision_nbytes: int  # bytes at the common precision (F16 for cast floats): similarity's weight
    bf16: str = ""  # hex; the tensor cast to BF16 (== content for non-float, BF16, F16 and F8 tensors)
    fp8: str = ""  # hex; the tensor cast to F8_E4M3 (== content for non-float, F8_E4M3 and F8_E5M2 tensors)
    e5m2: str = ""  # hex; the tensor cast to F8_E5M2 (== content for non-float, F8_E4M3 and F8_E5M2 tensors)


@dataclass(frozen=True)
class ComponentFingerprint:
    content_id: str
    precision_id: str
    tensors: int
    parameters: int
    nbytes: int
    bf16_id: str = ""
    fp8_id: str = ""
    e5m2_id: str = ""


@dataclass(frozen=True)
class Fingerprint:
    content_id: str
    precision_id: str
    tensors: int
    parameters: int
    dtypes: dict[str, int]  # dtype -> tensor count
    components: dict[str, ComponentFingerprint]
    digests: tuple[TensorDigest, ...] = ()  # empty when loaded from JSON without them
    ignored_tensors: int = 0  # buffers skipped by the ignore rule
    bf16_id: str = ""  # the content cast to bf16: an fp32 model and its bf16 export share it ("" in version 1)
    fp8_id: str = ""  # the content cast to fp8 e4m3fn: any float copy and its fp8 cast share it ("" before version 3)
    e5m2_id: str = ""  # the content cast to fp8 e5m2: any float copy and its e5m2 cast share it ("" before version 4)
    # A kohya Flux LoRA with alphas other than its ranks: the content_id diffusers' conversion of it has
    # (alphas folded into the weights, lora_folding.py); "" for every other file.
    folded_id: str = ""
    version: int = FINGERPRINT_VERSION

    @property
    def nbytes(self) -> int:
        return sum(c.nbytes for c in self.components.values())

    def to_dict(self, *, include_digests: bool = False) -> dict:
        data = {
            "version": self.version,
            "content_id": self.content_id,
            "precision_id": self.precision_id,
            "bf16_id": self.bf16_id,
            "fp8_id": self.fp8_id,
            "e5m2_id": self.e5m2_id,
            **({"folded_id": self.folded_id} if self.folded_id else {}),
            "tensors": self.tensors,
            "parameters": self.parameters,
            "nbytes": self.nbytes,
            "ignored_tensors": self.ignored_tensors,
            "dtypes": dict(sorted(self.dtypes.items())),
            "components": {
                name: {"content_id": c.content_id, "precision_id": c.precision_id, "bf16_id": c.bf16_id,
                       "fp8_id": c.fp8_id, "e5m2_id": c.e5m2_id, "tensors": c.tensors, "parameters": c.parameters, "nbytes": c.nbytes}
                for name, c in sorted(self.components.items())
            },
        }
        if include_digests:
            data["digests"] = [[d.content, d.precision, d.nbytes, d.precision_nbytes, d.component, d.bf16, d.fp8, d.e5m2]
                               for d in self.digests]
        return data

    def to_json(self, *, include_digests: bool = False) -> str:
        return json.dumps(self.to_dict(include_digests=include_digests), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, data: str | bytes | dict) -> Fingerprint:
        try:
            if not isinstance(data, dict):
                data = json.loads(data)
            if data.get("version") not in READABLE_VERSIONS:
                raise FingerprintError(f"unsupported fingerprint version {data.get('version')!r}")
            components = {
                str(name): ComponentFingerprint(
                    content_id=str(c["content_id"]), precision_id=str(c["precision_id"]),
                    tensors=int(c["tensors"]), parameters=int(c["parameters"]), nbytes=int(c["nbytes"]),
                    bf16_id=str(c.get("bf16_id", "")), fp8_id=str(c.get("fp8_id", "")),
                    e5m2_id=str(c.get("e5m2_id", "")))
                for name, c in data["components"].items()
            }
            digests = tuple(
                TensorDigest(content=str(d[0]), precision=str(d[1]), nbytes=int(d[2]),
                             precision_nbytes=int(d[3]), component=str(d[4]), bf16=str(d[5]) if len(d) > 5 else "",
                             fp8=str(d[6]) if len(d) > 6 else "", e5m2=str(d[7]) if len(d) > 7 else "")
                for d in data.get("digests", ()))
            return cls(
                content_id=str(data["content_id"]), precision_id=str(data["precision_id"]),
                tensors=int(data["tensors"]), parameters=int(data["parameters"]),
                dtypes={str(k): int(v) for k, v in data["dtypes"].items()},
                components=components, digests=digests, ignored_tensors=int(data.get("ignored_tensors", 0)),
                bf16_id=str(data.get("bf16_id", "")), fp8_id=str(data.get("fp8_id", "")),
                e5m2_id=str(data.get("e5m2_id", "")), folded_id=str(data.get("folded_id", "")),
                version=int(data["version"]))
        except FingerprintError:
            raise
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
            raise FingerprintError(f"not a fingerprint: {exc!r}"[:300]) from exc


# --- digests ---------------------------------------------------------------

def _digest_header(dtype: str, shape: tuple[int, ...]) -> bytes:
    squeezed = ",".join(str(d) for d in shape if d != 1)
    return _TENSOR_DOMAIN + f"{dtype}[{squeezed}]\n".encode("ascii")


def _canonical_array(tensor: Tensor) -> np.ndarray:
    """The tensor's values as a flat little-endian C-order array of the carried dtype."""
    expected = NUMPY_DTYPES.get(tensor.dtype)
    if expected is None:
        raise FingerprintError(f"tensor {tensor.name[:200]!r}: unsupported dtype {tensor.dtype!r}")
    array = tensor.array
    if not isinstance(array, np.ndarray) or tuple(array.shape) != tuple(tensor.shape):
        raise FingerprintError(f"tensor {tensor.name[:200]!r}: array does not match shape {tensor.shape}")
    if array.dtype != expected:
        if array.dtype.newbyteorder("=") != expected.newbyteorder("=") or array.dtype.itemsize != expected.itemsize:
            raise FingerprintError(
                f"tensor {tensor.name[:200]!r}: array dtype {array.dtype} does not carry {tensor.dtype}")
        array = array.astype(expected)  # byte-swap a big-endian array
    return np.ascontiguousarray(array).reshape(-1)


def _hash_bytes(header: bytes, flat: np.ndarray) -> str:
    hasher = blake3.blake3(header)
    hasher.update(flat.view(np.uint8))
    return hasher.hexdigest(length=DIGEST_BYTES)


# Casts for the precision digests: one table-driven RNE narrowing of F32 bits (narrowing.py, compiled by
# numba), bit-exact with torch's `.to()` (F16, BF16, float8_e4m3fn, float8_e5m2). numpy's own float16
# cast is a scalar loop here (~0.3-0.5 G elements/s); the compiled narrowing writes all four forms of
# ~330 M elements/s on one core. NaNs become one canonical NaN per format, so NaN payloads do not split
# precision digests.


class _CastHasher:
    """BLAKE3 of F32/F64/BF16/F16 values cast to `fmt` (RNE), fed a flat array in pieces of any size.
    Wider inputs are first brought to F32 bits exactly (BF16, F16) or as torch does (F64 rounds to F32:
    torch's double -> half / bfloat16 / fp8 casts go through float, so an F64 model, its F32 copy and a
    torch-made cast agree)."""

    def __init__(self, header: bytes, dtype: str, fmt: FloatFormat, chunk: int = _CHUNK_ELEMENTS,
                 scale: np.float32 | None = None) -> None:
        self.hasher = blake3.blake3(header)
        self.dtype = dtype
        self.chunk = max(1, chunk)
        self.narrow = Narrower(fmt, self.chunk)
        self.scale = scale  # a scaled fp8 weight: cast f32(value) * scale, the weight ComfyUI computes with
        self.wide = np.empty(self.chunk, dtype=np.uint32) if dtype != "F32" or scale is not None else None

    def update(self, flat: np.ndarray) -> None:
        for start in range(0, flat.size, self.chunk):
            piece = flat[start:start + self.chunk]
            bits = widen_to_f32_bits(piece, self.dtype, self.wide)
            if self.scale is not None:
                scaled = self.wide[:piece.size].view(np.float32)
                with np.errstate(all="ignore"):  # an F32 product, rounded once, as torch computes it
                    np.multiply(bits.view(np.float32), self.scale, out=scaled)
                bits = scaled.view(np.uint32)
            self.hasher.update(self.narrow(bits).view(np.uint8))

    def hexdigest(self) -> str:
        return self.hasher.hexdigest(length=DIGEST_BYTES)


def _hash_cast(header: bytes, flat: np.ndarray, dtype: str, fmt: FloatFormat, scale: np.float32 | None = None) -> str:
    hasher = _CastHasher(header, dtype, fmt, min(flat.size, _CHUNK_ELEMENTS), scale)
    hasher.update(flat)
    return hasher.hexdigest()


def _hash_as_f16(header: bytes, flat: np.ndarray, dtype: str) -> str:
    """Digest of `flat` cast to F16 (RNE; NaN -> 0x7E00 with its sign), in chunks so memory stays small."""
    return _hash_cast(header, flat, dtype, F16)


def _hash_as_bf16(header: bytes, flat: np.ndarray, dtype: str) -> str:
    """Digest of `flat` (F32 or F64) cast to BF16, bit-exact with torch's `.to(torch.bfloat16)` for
    every non-NaN value. Every NaN becomes 0x7FC0, sign dropped: torch itself writes 0xFFFF (vectorised
    path) or 0x7FC0 (scalar path) for the same NaN, so NaN bits say nothing about the weights."""
    return _hash_cast(header, flat, dtype, BF16)


def _hash_as_fp8(header: bytes, flat: np.ndarray, dtype: str) -> str:
    """Digest of `flat` (F32, F64, BF16 or F16) cast to float8_e4m3fn as torch's
    `.to(torch.float8_e4m3fn)` writes it (torch 2.13, CPU): RNE, subnormals kept, |x| > 448 and +-inf
    saturate to +-448 (0x7E), NaN -> 0x7F with its sign."""
    return _hash_cast(header, flat, dtype, F8_E4M3)


def _f32_bits_to_e4m3fn(bits: np.ndarray, scratch: tuple[np.ndarray, ...], out: np.ndarray) -> np.ndarray:
    """F32 bits -> float8_e4m3fn bits into `out` (the element-by-element check against torch in
    tests/workers/modelfiles/test_fp8_cast.py calls this; `scratch` is accepted for that call's sake)."""
    np.copyto(out, Narrower(F8_E4M3, bits.size)(bits))
    return out


# Which inputs each precision form is cast from, in FourNarrower's order (F16, BF16, F8_E4M3, F8_E5M2);
# a tensor not cast to a form has its content digest there.
_CAST_FROM = (_CAST_TO_F16, _CAST_TO_BF16, _CAST_TO_FP8, _CAST_TO_E5M2)


def _tensor_digest(tensor: Tensor, component: str, pool: ThreadPoolExecutor | None,
                   scale: np.float32 | None = None) -> TensorDigest:
    """The digests of one tensor; `scale`: a ComfyUI scaled fp8 weight's scale_weight (scaled_fp8.py).

    One pass over the values: each 256K-element chunk is widened to F32 bits (and scaled), narrowed
    to the four precision forms at once (FourNarrower), and the raw bytes and the forms are hashed.
    With a pool, this thread narrows chunk i+1 while the pool's thread hashes chunk i (the two halves
    cost about the same: ~43 ms and ~44 ms of CPU per 64 MiB of F32)."""
    flat = _canonical_array(tensor)
    dtype = tensor.dtype
    if scale is None:
        content = blake3.blake3(_digest_header(dtype, tensor.shape))
    else:  # the stored values and their scale: another scale is other content
        content = blake3.blake3(_digest_header(f"{dtype}*F32", tensor.shape))
    # A scaled weight is cast from f32(value) * scale, so even a BF16 or F16 one has every form to compute.
    casts = [blake3.blake3(_digest_header(fmt.name, tensor.shape)) if scale is not None or dtype in sources else None
             for fmt, sources in zip(FourNarrower.FORMATS, _CAST_FROM)]
    if any(casts):
        chunk = min(flat.size, _CHUNK_ELEMENTS) or 1
        narrower = FourNarrower(chunk)
        buffers = (narrower.outs, tuple(np.empty_like(o) for o in narrower.outs))
        wide = np.empty(chunk, dtype=np.uint32) if dtype != "F32" or scale is not None else None
        threaded = pool is not None and flat.nbytes >= _THREAD_MIN_BYTES

        def hash_chunk(piece: np.ndarray, forms: tuple[np.ndarray, ...]) -> None:
            content.update(piece.view(np.uint8))
            for hasher, form in zip(casts, forms):
                if hasher is not None:
                    hasher.update(form.view(np.uint8))

        pending = None
        for index, start in enumerate(range(0, flat.size, chunk)):
            piece = flat[start:start + chunk]
            bits = widen_to_f32_bits(piece, dtype, wide)
            if scale is not None:
                scaled = wide[:piece.size].view(np.float32)
                with np.errstate(all="ignore"):  # an F32 product, rounded once, as torch computes it
                    np.multiply(bits.view(np.float32), scale, out=scaled)
                bits = scaled.view(np.uint32)
            # Double-buffered: the pool may still be hashing the previous chunk's forms from the other set.
            forms = narrower(bits, buffers[index % 2])
            if pending is not None:
                pending.result()
            if threaded:
                pending = pool.submit(hash_chunk, piece, forms)
            else:
                hash_chunk(piece, forms)
        if pending is not None:
            pending.result()
    else:
        content.update(flat.view(np.uint8))
    if scale is not None:
        content.update(np.float32(scale).tobytes())
    raw = content.hexdigest(length=DIGEST_BYTES)
    f16, bf16, fp8, e5m2 = (raw if hasher is None else hasher.hexdigest(length=DIGEST_BYTES) for hasher in casts)
    precision_nbytes = flat.size * 2 if casts[0] is not None else flat.nbytes
    return TensorDigest(content=raw, precision=f16, nbytes=flat.nbytes, component=component,
                        precision_nbytes=precision_nbytes, bf16=bf16, fp8=fp8, e5m2=e5m2)


def _multiset_id(hex_digests: Iterable[str]) -> str:
    return blake3.blake3(_SET_DOMAIN + "\n".join(sorted(hex_digests)).encode("ascii")).hexdigest(
        length=DIGEST_BYTES)


# --- the same digests, a chunk at a time --------------------------------------
# The converter (workers/convert.py) hashes each tensor as it streams it to disk, so it never
# holds a whole tensor to learn the digests the catalog will compute for the file it writes.

class TensorHasher:
    """Content and precision digests of one tensor fed its little-endian C-order values in pieces
    (flat arrays of the dtype's numpy carry type); equal to `fingerprint_*`'s for the whole tensor.
    `precision=False` skips the fp16 cast when only the content digest is wanted."""

    def __init__(self, dtype: str, shape: tuple[int, ...], *, precision: bool = True) -> None:
        self.content = blake3.blake3(_digest_header(dtype, shape))
        self.skipped = not precision and dtype in _CAST_TO_F16
        self.cast = precision and dtype in _CAST_TO_F16
        self.precision = _CastHasher(_digest_header("F16", shape), dtype, F16) if self.cast else None

    def update(self, flat: np.ndarray) -> None:
        self.content.update(flat.view(np.uint8))
        if self.precision is not None:
            self.precision.update(flat)

    def digests(self) -> tuple[str, str | None]:
        """(content, precision); precision is None when it was not computed."""
        content = self.content.hexdigest(length=DIGEST_BYTES)
        if self.precision is not None:
            return content, self.precision.hexdigest()
        # Non-float, F16 and F8 tensors: the precision digest is the content digest.
        return content, None if self.skipped else content


def _canonical_emitted(lora: LoraForms, tensor: Tensor, context: object) -> Emitted | None:
    """What one tensor is digested as, for the fingerprint and ContentIdBuilder alike: None for a LoRA
    alpha (held until its module's rank is known), the LoRA forms of a LoRA matrix ([] while half of a
    fused Flux projection waits for its partner), else the canonical parts (splits, halves, transposes)."""
    if lora.hold_alpha(tensor, context):
        return None
    emitted = lora.take(tensor, context)
    return emitted if emitted is not None else [(part, tensor, context) for part in canonical_parts(tensor)]


class ContentIdBuilder:
    """`content_id` of a file from each tensor and its own content digest (TensorHasher's), with the
    fingerprint's canonical forms (split tensors, LoRA alphas) applied: what the converter checks the
    file it wrote against the catalog's id with. A tensor that stays whole keeps the digest it was
    given; only the parts of a split one are hashed again (their bytes are views of the tensor)."""

    def __init__(self, *, ignore: Callable[[str], bool] = is_ignored_key) -> None:
        self.ignore = ignore
        self.digests: list[str] = []
        self.lora = LoraForms()
        self.tied = TiedWeights()

    def add(self, tensor: Tensor, digest: str) -> None:
        parts = None if self.ignore(tensor.name) else _canonical_emitted(self.lora, tensor, digest)
        if parts is None:
            return
        if len(parts) == 1 and parts[0][0] is tensor and self.tied.repeats_partner(tensor.name, "", digest):
            return  # as _fingerprint: a tied weight's second name is not counted
        self._extend(parts)

    def add_tensor(self, tensor: Tensor) -> None:
        """`add` for a tensor held whole: its content digest is computed here."""
        self.add(tensor, _hash_bytes(_digest_header(tensor.dtype, tensor.shape), _canonical_array(tensor)))

    def _extend(self, emitted) -> None:
        for part, origin, digest in emitted:
            self.digests.append(digest if part is origin else
                                _hash_bytes(_digest_header(part.dtype, part.shape), _canonical_array(part)))

    def content_id(self) -> str:
        halves, alphas = self.lora.finish()
        self._extend(halves)
        digests = list(self.digests)
        for alpha, digest, is_lora in alphas:
            if alpha is None:
                continue
            if is_lora:  # the canonical F32 scalar: hashed, whatever the stored dtype was
                digests.append(_hash_bytes(_digest_header(alpha.dtype, alpha.shape), _canonical_array(alpha)))
            else:
                digests.append(digest)
        return _multiset_id(digests)


def multiset_id(hex_digests: Iterable[str]) -> str:
    """`content_id` / `precision_id` of a set of per-tensor digests (order does not matter)."""
    return _multiset_id(hex_digests)


# --- fingerprints ----------------------------------------------------------

def fingerprint_tensors(tensors: Iterable[Tensor], *,
                        component_of: Callable[[str], str] = component_for_key,
                        ignore: Callable[[str], bool] = is_ignored_key) -> Fingerprint:
    """Fingerprint a stream of tensors, holding one at a time."""
    return _fingerprint((t, None if ignore(t.name) else component_of(t.name)) for t in tensors)


def fingerprint_path(path: str | os.PathLike, *, variant: str | None = None,
                     progress: Callable[[int, int], None] | None = None,
                     observe: Callable[[str, tuple[int, ...]], None] | None = None) -> Fingerprint:
    """Fingerprint a safetensors file, a pickle-based torch checkpoint or a diffusers folder.

    The format is sniffed from content; anything else raises ModelFileError.
    In a diffusers folder each component's tensors belong to its subfolder
    name, and `variant` picks the weight variant (see read_diffusers_folder).
    `progress(done, total)` is called after each tensor with the tensor bytes read so far and the
    file's size (0 for a folder: its members are found as it goes).
    `observe(name, shape)` sees every tensor as it streams past (the self-description's evidence),
    so nothing is read twice.
    """
    from workers.modelfiles.sniff import sniff

    p = Path(path)
    kind = sniff(p)
    if kind == "diffusers":
        return _fingerprint(_observed(_diffusers_stream(p, variant=variant), observe), progress=progress, total=0)
    if variant is not None:
        raise FingerprintError("variant= applies to diffusers folders only")
    stream = ((t, None if is_ignored_key(t.name) else component_for_key(t.name)) for t in _iter_file_tensors(p, kind))
    fingerprint = _fingerprint(_observed(stream, observe), progress=progress, total=p.stat().st_size,
                               alpha_of=_config_alphas(p, kind))
    if ALPHA_COMPONENT in fingerprint.components:  # alphas other than the ranks: diffusers may fold them
        from workers.modelfiles import lora_folding

        folded = lora_folding.folded_content_id(lambda: _iter_file_tensors(p, kind), builder_factory=ContentIdBuilder)
        if folded:
            fingerprint = replace(fingerprint, folded_id=folded)
    return fingerprint


def _config_alphas(path: Path, kind: str) -> Callable[[str], float | None]:
    """The LoRA alphas a PEFT file keeps outside its tensors (lora_alpha_config.py): its safetensors
    metadata, else an adapter_config.json beside it. Read on the first question, which only a LoRA
    with alpha-less modules asks."""
    from workers.modelfiles import lora_alpha_config

    found: list = []

    def alpha_of(module: str) -> float | None:
        if not found:
            config = None
            if kind == "safetensors":
                try:
                    config = lora_alpha_config.from_metadata(read_safetensors_header(path).metadata)
                except ModelFileError:
                    config = None
            found.append(config or lora_alpha_config.from_adapter_config(path))
        return found[0].alpha_for(module) if found[0] is not None else None

    return alpha_of


def _observed(stream: Iterable[tuple[Tensor, str | None]], observe) -> Iterable[tuple[Tensor, str | None]]:
    if observe is None:
        return stream
    return ((observe(t.name, t.shape), (t, c))[1] for t, c in stream)


def _iter_file_tensors(path: Path, kind: str) -> Iterator[Tensor]:
    if kind == "safetensors":
        return iter_safetensors_tensors(path)
    if kind in PICKLE_FORMATS or kind in ("npy", "npz"):
        from workers.modelfiles.torch_reader import iter_torch_tensors

        return iter_torch_tensors(path)
    raise FingerprintError(f"{path.name}: cannot read tensors from a {kind!r} file")


def _diffusers_stream(root: Path, *, variant: str | None) -> Iterator[tuple[Tensor, str | None]]:
    from workers.modelfiles.diffusers import read_diffusers_folder
    from workers.modelfiles.sniff import sniff

    folder = read_diffusers_folder(root, variant=variant)
    for component in folder.components:
        if component.name in DIFFUSERS_SKIPPED_COMPONENTS:
            continue
        for weight_file in component.weight_files:
            for tensor in _iter_file_tensors(weight_file, sniff(weight_file)):
                yield tensor, None if is_ignored_key(tensor.name) else component_for_folder_key(component.name, tensor.name)


def _progressed(stream: Iterable[tuple[Tensor, str | None]], progress: Callable[[int, int], None] | None,
                total: int) -> Iterator[tuple[Tensor, str | None]]:
    done = 0
    for tensor, component in stream:
        if progress is not None:
            done += tensor.array.nbytes
            progress(done, total)
        yield tensor, component


def _fingerprint(stream: Iterable[tuple[Tensor, str | None]], *,
                 progress: Callable[[int, int], None] | None = None, total: int = 0,
                 alpha_of: Callable[[str], float | None] | None = None) -> Fingerprint:
    digests: list[TensorDigest] = []
    dtypes: Counter[str] = Counter()
    parameters: Counter[str] = Counter()
    ignored = 0
    lora = LoraForms()
    tied = TiedWeights()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="fingerprint") as pool:
        for tensor, component, scale in scaled_fp8.paired(_progressed(stream, progress, total)):
            if component is None:
                ignored += 1
                continue
            emitted = _canonical_emitted(lora, tensor, component)
            if emitted is None:  # an alpha: counted once its module's rank says whether it is neutral
                continue
            mine = [_tensor_digest(part, part_component, pool, scale) for part, _, part_component in emitted]
            if len(mine) == 1 and tied.repeats_partner(tensor.name, component, mine[0].content):
                ignored += 1  # T5's embed_tokens saved beside the shared.weight it is tied to
                continue
            digests.extend(mine)
            dtypes[tensor.dtype] += 1
            parameters[component] += math.prod(tensor.shape)
        halves, alphas = lora.finish(alpha_of)
        for part, _, part_component in halves:
            digests.append(_tensor_digest(part, part_component, pool))
        for alpha, component, is_lora in alphas:
            if alpha is None:  # alpha == rank: the neutral scale, what a file without alpha means
                ignored += 1
                continue
            component = ALPHA_COMPONENT if is_lora else component
            for part in [alpha] if is_lora else canonical_parts(alpha):
                digests.append(_tensor_digest(part, component, pool))
            dtypes[alpha.dtype] += 1
            parameters[component] += math.prod(alpha.shape)
    components: dict[str, ComponentFingerprint] = {}
    for name in sorted({d.component for d in digests}):
        mine = [d for d in digests if d.component == name]
        components[name] = ComponentFingerprint(
            content_id=_multiset_id(d.content for d in mine),
            precision_id=_multiset_id(d.precision for d in mine), bf16_id=_multiset_id(d.bf16 for d in mine),
            fp8_id=_multiset_id(d.fp8 for d in mine), e5m2_id=_multiset_id(d.e5m2 for d in mine),
            tensors=len(mine), parameters=parameters[name], nbytes=sum(d.nbytes for d in mine))
    return Fingerprint(
        content_id=_multiset_id(d.content for d in digests),
        precision_id=_multiset_id(d.precision for d in digests), bf16_id=_multiset_id(d.bf16 for d in digests),
        fp8_id=_multiset_id(d.fp8 for d in digests), e5m2_id=_multiset_id(d.e5m2 for d in digests),
        tensors=len(digests), parameters=sum(parameters.values()), dtypes=dict(dtypes),
        components=components, digests=tuple(digests), ignored_tensors=ignored)


# --- comparing -------------------------------------------------------------

def similarity(a: Fingerprint, b: Fingerprint) -> float:
    """Share of tensor bytes two fingerprints have in common, in [0, 1].

    Multiset intersection of precision digests (so fp32 vs fp16 copies count
    as equal), weighted by each tensor's size at that common precision, over
    the larger of the two totals. A fine-tune that kept its base's VAE and
    text encoder scores roughly their share of the model (~0.2 for SD 1.x).
    Without per-tensor digests (loaded from JSON without them), whole
    components with equal precision_id are counted instead, by stored bytes.
    """
    if a.precision_id == b.precision_id and a.tensors == b.tensors:
        return 1.0
    if a.digests and b.digests:
        weights: dict[str, int] = {}
        count_a: Counter[str] = Counter()
        count_b: Counter[str] = Counter()
        for d in a.digests:
            count_a[d.precision] += 1
            weights[d.precision] = d.precision_nbytes
        for d in b.digests:
            count_b[d.precision] += 1
            weights[d.precision] = d.precision_nbytes
        total = max(sum(weights[k] * n for k, n in count_a.items()),
                    sum(weights[k] * n for k, n in count_b.items()))
        if total == 0:
            return 0.0
        common = sum(weights[k] * min(n, count_b[k]) for k, n in count_a.items())
        return common / total
    b_by_id = Counter(c.precision_id for c in b.components.values())
    common = 0
    for c in a.components.values():
        if b_by_id[c.precision_id] > 0:
            b_by_id[c.precision_id] -= 1
            common += c.nbytes
    total = max(a.nbytes, b.nbytes)
    return min(1.0, common / total) if total else 0.0


def shared_components(a: Fingerprint, b: Fingerprint) -> list[str]:
    """Names (as `a` calls them) of a's components that b holds too, at any precision.

    Matching is by precision_id, not by name, so a standalone VAE file (all
    keys classed "vae") matches a folder's vae, and a mislabelled part still counts.
    """
    theirs = {c.precision_id for c in b.components.values() if c.tensors}
    return sorted(name for name, c in a.components.items() if c.tensors and c.precision_id in theirs)


__all__ = [
    "Fingerprint", "ComponentFingerprint", "TensorDigest", "FingerprintError",
    "fingerprint_tensors", "fingerprint_path", "similarity", "shared_components",
    "component_for_key", "component_for_folder_key", "is_ignored_key", "SCHEDULE_BUFFERS", "IGNORED_LEAVES", "IGNORED_PREFIXES",
    "DIFFUSERS_SKIPPED_COMPONENTS", "FINGERPRINT_VERSION", "CURRENT_EXCEPT_KINDS", "TensorHasher", "multiset_id", "ContentIdBuilder",
]
