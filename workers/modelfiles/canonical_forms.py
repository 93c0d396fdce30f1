"""Canonical tensor forms: undo what converters do to tensors beyond renaming them. PURE.

The fingerprint digests each tensor's values, never its name, so a conversion
that only renames keys (or reshapes a 1x1 conv into a linear) keeps every
digest. Some conversions change the tensors themselves:

- fused attention projections are split: one `qkv` / `in_proj_weight` tensor of
  3*D rows becomes three D-row tensors (q, k, v);
- Flux single blocks fuse q, k, v and the MLP input in `linear1`;
- some adaLN modulation weights are stored with their (shift, scale) halves
  swapped (diffusers' `swap_scale_shift`);
- OpenCLIP's `text_projection` is used as `x @ P`, the diffusers Linear stores Pᵀ.

Before digesting, every tensor is replaced by its canonical parts, chosen by
what its name says (names still never enter a digest). Splits go along the
first dimension: C-contiguous row slices are views, so no bytes are copied;
the digests of the parts form the same multiset on both sides of the
conversion, and the multiset does not care about order, so a split that is
also applied to the already-split side's fused twin (the modulation halves)
makes swapped halves equal as well.

A new family is a table below, not code. Each rule cites the converter it
mirrors (diffusers `src/diffusers/loaders/single_file_utils.py`, v0.32).
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from workers.modelfiles.types import Tensor


@dataclass(frozen=True)
class Rule:
    family: str
    pattern: re.Pattern
    split: Callable[[tuple[int, ...]], list[int]] | None = None  # row counts of the parts, in order
    transpose: bool = False
    mirrors: str = ""


def _thirds(shape: tuple[int, ...]) -> list[int]:
    rows = shape[0]
    return [rows // 3] * 3 if rows % 3 == 0 else [rows]


def _halves(shape: tuple[int, ...]) -> list[int]:
    rows = shape[0]
    return [rows // 2] * 2 if rows % 2 == 0 else [rows]


def _flux_linear1(shape: tuple[int, ...]) -> list[int]:
    """q, k, v (hidden rows each) then the MLP input (mlp_ratio * hidden rows)."""
    rows = shape[0]
    # The weight says hidden (its columns); a bias does not: Flux's mlp_ratio 4 makes rows = 7 * hidden.
    hidden = shape[1] if len(shape) == 2 else (rows // 7 if rows % 7 == 0 else 0)
    if not hidden or rows <= 3 * hidden:
        return [rows]
    return [hidden, hidden, hidden, rows - 3 * hidden]


_ANY = r"(?:^|\.)"  # the key may sit under model.diffusion_model., a component prefix, ...

RULES: tuple[Rule, ...] = (
    # SD 2.x cond_stage_model.model.* and SDXL conditioner.embedders.1.model.* (OpenCLIP ViT-H / bigG).
    Rule("openclip", re.compile(_ANY + r"resblocks\.\d+\.attn\.in_proj_(weight|bias)$"), split=_thirds,
         mirrors="convert_open_clip_checkpoint: in_proj_weight -> q_proj/k_proj/v_proj"),
    Rule("openclip", re.compile(r"(?:^|\.)model\.text_projection$"), transpose=True,
         mirrors="convert_open_clip_checkpoint: text_projection -> text_projection.weight (.T)"),
    # Flux (Black Forest Labs layout) <-> FluxTransformer2DModel.
    Rule("flux", re.compile(_ANY + r"double_blocks\.\d+\.(img|txt)_attn\.qkv\.(weight|bias)$"), split=_thirds,
         mirrors="convert_flux_transformer_checkpoint_to_diffusers: img_attn.qkv -> attn.to_q/to_k/to_v, "
                 "txt_attn.qkv -> attn.add_q_proj/add_k_proj/add_v_proj"),
    Rule("flux", re.compile(_ANY + r"single_blocks\.\d+\.linear1\.(weight|bias)$"), split=_flux_linear1,
         mirrors="convert_flux_transformer_checkpoint_to_diffusers: linear1 -> attn.to_q/to_k/to_v + proj_mlp"),
    Rule("flux", re.compile(_ANY + r"double_blocks\.\d+\.txt_mod\.lin\.(weight|bias)$"), split=_halves,
         mirrors="convert_flux_transformer_checkpoint_to_diffusers: txt_mod.lin -> norm1_context.linear, not "
                 "swapped; halved because the diffusers name is halved for SD3 (below), so both sides agree"),
    Rule("flux", re.compile(_ANY + r"final_layer\.adaLN_modulation\.1\.(weight|bias)$"), split=_halves,
         mirrors="convert_flux_transformer_checkpoint_to_diffusers: swap_scale_shift -> norm_out.linear"),
    # SD3 (Stability layout) <-> SD3Transformer2DModel.
    Rule("sd3", re.compile(_ANY + r"joint_blocks\.\d+\.(x|context)_block\.attn2?\.qkv\.(weight|bias)$"), split=_thirds,
         mirrors="convert_sd3_transformer_checkpoint_to_diffusers: x_block.attn.qkv -> attn.to_q/to_k/to_v, "
                 "context_block.attn.qkv -> attn.add_q_proj/add_k_proj/add_v_proj, "
                 "x_block.attn2.qkv (SD3.5 dual attention) -> attn2.to_q/to_k/to_v"),
    Rule("sd3", re.compile(_ANY + r"joint_blocks\.\d+\.context_block\.adaLN_modulation\.1\.(weight|bias)$"),
         split=_halves, mirrors="convert_sd3_transformer_checkpoint_to_diffusers: swap_scale_shift on the last "
                                "block -> norm1_context.linear (halved on every block: the two sides agree)"),
    # The diffusers side of the same halves: split identically, so swapped halves meet in the multiset.
    Rule("diffusers", re.compile(_ANY + r"norm_out\.linear\.(weight|bias)$"), split=_halves,
         mirrors="the diffusers side of swap_scale_shift (Flux, SD3 final layer)"),
    Rule("diffusers", re.compile(_ANY + r"transformer_blocks\.\d+\.norm1_context\.linear\.(weight|bias)$"),
         split=_halves, mirrors="the diffusers side of swap_scale_shift (SD3 last block's context norm)"),
)


def rule_for(name: str) -> Rule | None:
    for rule in RULES:
        if rule.pattern.search(name):
            return rule
    return None


def canonical_parts(tensor: Tensor) -> list[Tensor]:
    """The tensor as the parts the fingerprint digests (itself, unless a rule says otherwise)."""
    rule = rule_for(tensor.name)
    if rule is None or not tensor.shape:
        return [tensor]
    array = tensor.array
    if rule.transpose:
        if len(tensor.shape) != 2:
            return [tensor]
        flipped = np.ascontiguousarray(array.T)
        return [Tensor(name=tensor.name, dtype=tensor.dtype, shape=tuple(flipped.shape), array=flipped)]
    rows = rule.split(tuple(tensor.shape))
    if len(rows) == 1:
        return [tensor]
    parts, start = [], 0
    for i, n in enumerate(rows):
        piece = array[start:start + n]
        parts.append(Tensor(name=f"{tensor.name}#{i}", dtype=tensor.dtype, shape=tuple(piece.shape), array=piece))
        start += n
    return parts
