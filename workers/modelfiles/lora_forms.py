"""LoRA canonical forms: one identity for a LoRA whatever trainer or converter named it. PURE.

A LoRA stores, per adapted module, a down matrix [rank, in] and an up matrix [out, rank] (plus an
optional `alpha` scalar, and `lora_mid` for LoCon). Layouts name them differently:

    kohya       lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight / .lora_up.weight / .alpha
    PEFT        unet.down_blocks.0.attentions.0.proj_in.lora_A.weight / .lora_B.weight (.lora_A.default.weight)
    diffusers   unet.down_blocks.0.attentions.0.proj_in.lora.down.weight / .lora.up.weight (pre-PEFT format;
                text encoders ...q_proj.lora_linear_layer.down.weight)
    attn procs  ...attn1.processor.to_k_lora.down.weight
    BFL Flux    diffusion_model.double_blocks.0.img_attn.qkv.lora_A.weight
    xlabs Flux  double_blocks.0.processor.qkv_lora1.down.weight

`lora_part` reads a key as (module, role) with role down | up | mid | alpha, down == lora_A, up ==
lora_B. `module_key` makes the module name layout-independent (kohya's lora_unet_ / lora_te1_ /
lora_te2_ prefixes -> unet / text_encoder / text_encoder_2, the way diffusers'
`convert_state_dict_to_kohya` maps them, and every '.' and '_' as one separator, because kohya
writes the diffusers module path with '_' for '.'). SGM-named kohya SDXL modules
(lora_unet_input_blocks_4_1_...) keep their own names: mapping them needs the UNet config
(diffusers' `_maybe_map_sgm_blocks_to_diffusers`). Names still never enter a digest: the key
mapping pairs a module's alpha with its rank, and tests check it against diffusers' converters.

Alpha (the decision). The forward pass scales a module's delta by alpha / rank. PEFT files carry no
alpha tensor (PEFT keeps lora_alpha in its config: `finish(alpha_of)` takes what
lora_alpha_config.py read of it, for the modules that have a rank and no alpha); diffusers' `convert_state_dict_to_kohya`
(PEFT -> kohya) writes alpha = rank for every module, and its kohya Flux converter takes a missing
alpha as rank. So an alpha equal to its module's rank is the neutral scale, what "no alpha" means:
it is dropped before digesting, and a kohya file and its PEFT/diffusers copy share content_id and
precision ids. An alpha that differs from the rank changes the LoRA's effect; it is digested in
its own component, "lora_alpha": a float alpha as stored (kohya writes F32/F16/BF16; an fp16 copy's
alpha then differs in content and agrees in precision, like its matrices), an integer one (diffusers
writes int64) as an F32 scalar of its value. A kohya file with alpha != rank and a PEFT copy that
lost it ("same LoRA, alpha lost") therefore have different content_ids but the same "lora"
component (the matrices). An alpha whose module has no down matrix in the file is not a LoRA's
alpha and is digested as any tensor.

Fused Flux projections (BFL and kohya Flux LoRAs on img_attn.qkv / txt_attn.qkv / linear1, xlabs
qkv_lora*): diffusers' converters (`_convert_kohya_flux_lora_to_diffusers` ->
`_convert_to_ai_toolkit_cat`, `_convert_xlabs_flux_lora_to_diffusers` -> `handle_qkv`) copy the
down matrix to each of to_q / to_k / to_v (+ proj_mlp for linear1) and split the up matrix by rows
(thirds; q, k, v then the MLP's 4x for linear1). The fused side is put in that form: down repeated
once per part, up split (row slices are views: nothing is copied). The kohya converter's "sparse"
case (rank divisible by the parts and an up matrix that is zero off its diagonal blocks, what
merging per-projection LoRAs into the fused layout gives) chunks the down matrix by rows and keeps
the diagonal blocks of the up one instead: mirrored too, so a module's down half waits for its up
half (`LoraForms.take`). A kohya Flux LoRA with alpha != rank, whose diffusers conversion multiplies
the weights by alpha / rank (new values, new digests), is linked to it another way: its fingerprint
also holds the id that conversion will have (`folded_id`, lora_folding.py).
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from workers.modelfiles.types import Tensor

ALPHA_COMPONENT = "lora_alpha"
_FLOATS = frozenset({"F16", "BF16", "F32", "F64", "F8_E4M3", "F8_E5M2"})
_INTEGERS = frozenset({"U8", "I8", "I16", "U16", "I32", "U32", "I64", "U64"})

# Greedy module, so the match is tried from the key's end: the suffixes are short.
_PART_RE = re.compile(
    r"^(?P<module>.+)(?:"
    r"\.lora_(?P<kohya>down|up|mid|A|B)(?:\.default)?\.weight"  # kohya, LoCon, PEFT, BFL
    r"|\.(?:lora|lora_linear_layer)\.(?P<diffusers>down|up)\.weight"  # diffusers before PEFT (text encoders: lora_linear_layer)
    r"|(?P<proc>_lora\d*)\.(?P<proc_role>down|up)\.weight"  # attention processors, xlabs
    r"|\.(?P<alpha>alpha))$")
_ROLES = {"down": "down", "A": "down", "up": "up", "B": "up", "mid": "mid"}

# kohya prefixes as diffusers' convert_state_dict_to_kohya writes them, and their diffusers names.
# Denoiser names (unet / transformer / BFL diffusion_model) are one group: kohya calls a Flux
# transformer lora_unet_ too.
_GROUPS = (
    ("lora_unet_", "denoiser"), ("lora_transformer_", "denoiser"), ("lora_te1_", "text_encoder"),
    ("lora_te_", "text_encoder"), ("lora_te2_", "text_encoder_2"), ("lora_te3_", "text_encoder_3"),
    ("unet.", "denoiser"), ("transformer.", "denoiser"), ("model.diffusion_model.", "denoiser"),
    ("diffusion_model.", "denoiser"), ("text_encoder.", "text_encoder"), ("text_encoder_2.", "text_encoder_2"),
    ("text_encoder_3.", "text_encoder_3"),
)
_SEPARATORS = re.compile(r"\.{2,}")


@dataclass(frozen=True)
class LoraPart:
    module: str  # layout-independent (module_key)
    role: str  # down | up | mid | alpha


def module_key(module: str) -> str:
    """'denoiser:down.blocks.0.attentions.0.proj.in' for kohya's lora_unet_down_blocks_0_attentions_0_proj_in
    and PEFT's unet.down_blocks.0.attentions.0.proj_in alike."""
    group = ""
    for prefix, name in _GROUPS:
        if module.startswith(prefix):
            group, module = name, module[len(prefix):]
            break
    tokens = module.replace("_", ".")
    if ".." in tokens:
        tokens = _SEPARATORS.sub(".", tokens)
    return f"{group}:{tokens.strip('.')}"


def lora_part(name: str) -> LoraPart | None:
    """What a key is in a LoRA, or None when it names no LoRA part."""
    if "lora" not in name and not name.endswith(".alpha"):  # most keys of most files: no regex
        return None
    m = _PART_RE.match(name)
    if m is None:
        return None
    if m["alpha"]:
        role = "alpha"
    elif m["proc_role"]:
        role = m["proc_role"]
    else:
        role = _ROLES[m["kohya"] or m["diffusers"]]
    module = m["module"] + (m["proc"] or "")
    return LoraPart(module=module_key(module), role=role)


# --- fused Flux projections -----------------------------------------------------------------

def _thirds(rows: int) -> list[int]:
    return [rows // 3] * 3 if rows % 3 == 0 else [rows]


def _linear1(rows: int) -> list[int]:
    # q, k, v (hidden rows each) then proj_mlp (mlp_ratio 4: 4 * hidden): rows = 7 * hidden.
    hidden = rows // 7 if rows % 7 == 0 else 0
    return [hidden, hidden, hidden, rows - 3 * hidden] if hidden else [rows]


@dataclass(frozen=True)
class Fused:
    parts: int
    split: object  # rows -> row counts of the up matrix's parts
    sparse_aware: bool  # the converter chunks the down matrix when the up one is block-diagonal


_FUSED = (
    # Each from the converter it mirrors. _convert_kohya_flux_lora_to_diffusers (kohya, ComfyUI
    # diffusion_model.* names) -> _convert_to_ai_toolkit_cat: img_attn_qkv -> attn.to_q/k/v,
    # txt_attn_qkv -> attn.add_q/k/v_proj; linear1 -> attn.to_q/k/v + proj_mlp ([3072]*3 + [12288] for Flux dev).
    (re.compile(r"^(?:denoiser)?:double\.blocks\.\d+\.(?:img|txt)\.attn\.qkv$"), Fused(3, _thirds, True)),
    (re.compile(r"^(?:denoiser)?:single\.blocks\.\d+\.linear1$"), Fused(4, _linear1, True)),
    # _convert_xlabs_flux_lora_to_diffusers: processor.qkv_lora1/2 -> handle_qkv (always copies the down matrix)
    (re.compile(r"^(?:denoiser)?:(?:double|single)\.blocks\.\d+\.processor\.qkv\.lora\d*$"), Fused(3, _thirds, False)),
)


def fused_projection(module: str) -> Fused | None:
    """How a fused Flux projection (BFL qkv / linear1, xlabs qkv_lora) splits, None for any other module."""
    return next((f for pattern, f in _FUSED if pattern.match(module)), None)


def _split_rows(tensor: Tensor, rows: list[int]) -> list[Tensor]:
    parts, start = [], 0
    for i, n in enumerate(rows):
        piece = tensor.array[start:start + n]
        parts.append(Tensor(name=f"{tensor.name}#{i}", dtype=tensor.dtype, shape=tuple(piece.shape), array=piece))
        start += n
    return parts


def _zero(values: np.ndarray, dtype: str) -> np.ndarray:
    """== 0 as torch sees it (-0.0 too), for dtypes carried as their bits."""
    if dtype == "BF16":
        return (values & 0x7FFF) == 0
    if dtype in ("F8_E4M3", "F8_E5M2"):
        return (values & 0x7F) == 0
    return values == 0


def _block_diagonal(up: Tensor, rows: list[int], rank: int) -> bool:
    """`_convert_to_ai_toolkit_cat`'s is_sparse: every block off the diagonal (rows of part j, the rank
    columns of part k != j) is zero."""
    array, start = up.array, 0
    for j, n in enumerate(rows):
        for k in range(len(rows)):
            if k != j and not _zero(array[start:start + n, k * rank:(k + 1) * rank], up.dtype).all():
                return False
        start += n
    return True


def _fused_parts(fused: Fused, down: Tensor | None, up: Tensor | None) -> list[Tensor]:
    """The parts diffusers' converter makes of a fused module: the down matrix copied to each part and
    the up one split by rows; or, for a block-diagonal up (sparse), the down matrix chunked by rows and
    the up one cut into its diagonal blocks. A half whose partner is missing takes the copy form."""
    rows = fused.split(int(up.shape[0])) if up is not None else [0] * fused.parts
    if down is None or up is None or len(rows) != fused.parts:
        out = [down] * fused.parts if down is not None else []
        return out + ([] if up is None else [up] if len(rows) == 1 else _split_rows(up, rows))
    rank = int(down.shape[0])
    sparse = (fused.sparse_aware and rank % fused.parts == 0 and len(up.shape) == 2 and int(up.shape[1]) == rank
              and _block_diagonal(up, rows, rank // fused.parts))
    if not sparse:
        return [down] * fused.parts + _split_rows(up, rows)
    r = rank // fused.parts
    parts = _split_rows(down, [r] * fused.parts)
    start = 0
    for j, n in enumerate(rows):
        block = np.ascontiguousarray(up.array[start:start + n, j * r:(j + 1) * r])  # a few rank columns: small
        parts.append(Tensor(name=f"{up.name}#{j}", dtype=up.dtype, shape=tuple(block.shape), array=block))
        start += n
    return parts


# --- a file's LoRA tensors, one at a time ---------------------------------------------------

def _e4m3fn(bits: int) -> float:
    sign = -1.0 if bits & 0x80 else 1.0
    exponent, mantissa = (bits >> 3) & 0xF, bits & 0x7
    if exponent == 0xF and mantissa == 0x7:
        return float("nan")
    if exponent == 0:
        return sign * mantissa * 2.0 ** -9
    return sign * (1 + mantissa / 8) * 2.0 ** (exponent - 7)


def alpha_value(tensor: Tensor) -> float | None:
    """The scalar's value; None for a dtype that holds no plain real number (bool, complex)."""
    flat = np.asarray(tensor.array).reshape(-1)
    if flat.size != 1:
        return None
    if tensor.dtype == "BF16":  # carried as its bits: the upper half of an F32
        return float(np.array([int(flat[0]) << 16], dtype="<u4").view("<f4")[0])
    if tensor.dtype == "F8_E5M2":  # the upper byte of an F16
        return float(np.array([int(flat[0]) << 8], dtype="<u2").view("<f2")[0])
    if tensor.dtype == "F8_E4M3":
        return _e4m3fn(int(flat[0]))
    if tensor.dtype in _FLOATS or tensor.dtype in _INTEGERS:
        return float(flat[0])
    return None


Emitted = list[tuple[Tensor, Tensor, object]]  # (part to digest, the file tensor it comes from, its context)


class LoraForms:
    """Fed a file's tensors in any order: `hold_alpha` keeps alphas, `take(tensor, context)` says what
    to digest now, `finish()` what is left once every tensor was seen. Held back until then: alphas
    (scalars, until every module's rank is known) and one half of a fused Flux projection until its
    partner shows whether diffusers would copy or chunk the down matrix. Files list a module's down
    and up next to each other, so one half waits at a time; at worst (every down first) the fused
    halves of a Flux LoRA, a part of the file (the safetensors reader hands out views of its mmap)."""

    def __init__(self) -> None:
        self.ranks: dict[str, int] = {}
        self.alphas: list[tuple[str, Tensor, object]] = []
        self.halves: dict[tuple[str, str], tuple[Tensor, object]] = {}
        self._last: tuple[str | None, LoraPart | None] = (None, None)

    def _part(self, name: str) -> LoraPart | None:
        if self._last[0] != name:  # hold_alpha then take ask about the same key: read it once
            self._last = (name, lora_part(name))
        return self._last[1]

    def hold_alpha(self, tensor: Tensor, context: object = None) -> bool:
        """True when the tensor is a scalar named like a LoRA alpha: kept for `finish`."""
        part = self._part(tensor.name)
        if part is None or part.role != "alpha" or int(np.prod(tensor.shape, dtype=np.int64)) != 1:
            return False  # not an alpha, or a weight that happens to be called alpha
        held = np.array(tensor.array, copy=True)  # a copy: a view would pin the reader's mmap
        self.alphas.append((part.module, Tensor(name=tensor.name, dtype=tensor.dtype, shape=tensor.shape,
                                                array=held), context))
        return True

    def take(self, tensor: Tensor, context: object = None) -> Emitted | None:
        """None when the tensor is no LoRA matrix (digest it as any tensor); else the parts to digest now
        ([] while half of a fused projection waits for its partner)."""
        part = self._part(tensor.name)
        if part is None or part.role == "alpha":
            return None
        if part.role == "mid" or len(tensor.shape) < 2:
            return [(tensor, tensor, context)]
        if part.role == "down":
            self.ranks[part.module] = int(tensor.shape[0])
        fused = fused_projection(part.module)
        if fused is None:
            return [(tensor, tensor, context)]
        other = "up" if part.role == "down" else "down"
        partner = self.halves.pop((part.module, other), None)
        if partner is None:
            if (part.module, part.role) in self.halves:  # a second down (or up) for one module: left unpaired
                half = (tensor, context)
                return self._emit(fused, half if part.role == "down" else None, half if part.role == "up" else None)
            self.halves[(part.module, part.role)] = (tensor, context)
            return []
        pair = ((tensor, context), partner) if part.role == "down" else (partner, (tensor, context))
        return self._emit(fused, *pair)

    @staticmethod
    def _emit(fused: Fused, down: tuple[Tensor, object] | None, up: tuple[Tensor, object] | None) -> Emitted:
        out = []
        for p in _fused_parts(fused, down[0] if down else None, up[0] if up else None):
            # A part is its file tensor (a copied down matrix) or a view of one: find which by name.
            origin = down if down is not None and (p is down[0] or p.name.startswith(down[0].name + "#")) else up
            out.append((p, origin[0], origin[1]))
        return out

    def finish(self, alpha_of: Callable[[str], float | None] | None = None
               ) -> tuple[Emitted, list[tuple[Tensor | None, object, bool]]]:
        """(the fused halves whose partner never came, in the copy form; per held-back alpha: its canonical
        tensor or None when neutral, its context, whether it is a LoRA's alpha). `alpha_of(module)` is
        asked for the modules that have a rank and no alpha tensor (a PEFT file's config keeps them,
        lora_alpha_config.py); only called when there are some, so a file that is no LoRA costs nothing."""
        halves: Emitted = []
        for (module, role), half in self.halves.items():
            fused = fused_projection(module)
            halves += self._emit(fused, half if role == "down" else None, half if role == "up" else None)
        self.halves = {}
        out = []
        for module, tensor, context in self.alphas:
            rank = self.ranks.get(module)
            if rank is None:
                out.append((tensor, context, False))
                continue
            value = alpha_value(tensor)
            if value is not None and value == rank:
                out.append((None, context, True))
            elif value is not None and tensor.dtype in _INTEGERS:  # diffusers' int64: the value is what counts
                scalar = np.array(value, dtype="<f4")
                out.append((Tensor(name=tensor.name, dtype="F32", shape=(), array=scalar), context, True))
            else:  # a float as stored: an fp16 copy's alpha is then its precision variant too
                out.append((tensor, context, True))
        missing = [m for m in self.ranks if m not in {module for module, _, _ in self.alphas}]
        for module in missing if alpha_of is not None else ():
            value = alpha_of(module)
            if value is None or value == self.ranks[module]:
                continue  # unknown, or neutral: digested as a file without alpha is
            # As kohya stores it (F32 scalar); an integer alpha would be canonicalised to this too.
            scalar = np.array(value, dtype="<f4")
            out.append((Tensor(name=f"{module}.alpha", dtype="F32", shape=(), array=scalar), None, True))
        return halves, out


__all__ = ["ALPHA_COMPONENT", "Emitted", "LoraForms", "LoraPart", "alpha_value", "fused_projection", "lora_part", "module_key"]
