"""Model files the tests build from arrays: safetensors written from numpy, a Flux layout pair, a PEFT LoRA.

Shared by the catalog tests (through register -> hashing -> analysis) and the
workers' reader tests. No Django here, and torch is imported only by the
builders that need it, so a module that builds from numpy alone does not pay for it.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np


def write_safetensors(path: Path, payload: bytes = b"\x00" * 16, metadata: dict | None = None) -> Path:
    """A tiny valid safetensors file: one U8 tensor holding `payload`."""
    header = {"w": {"dtype": "U8", "shape": [len(payload)], "data_offsets": [0, len(payload)]}}
    if metadata:
        header["__metadata__"] = metadata
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + payload)
    return path


def write_tensors(path, tensors: dict[str, tuple[str, np.ndarray]], metadata: dict[str, str] | None = None):
    """A safetensors file at `path` from {name: (dtype, array)}, the header padded to 8 bytes; returns `path`."""
    header, blobs, offset = ({"__metadata__": metadata} if metadata else {}), [], 0
    for name, (dtype, array) in tensors.items():
        raw = np.ascontiguousarray(array).tobytes()
        header[name] = {"dtype": dtype, "shape": list(array.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))
    return path


def flux_pair(seed=3, h=8, mlp=32):
    """One Flux block pair as BFL names it (fused qkv / linear1) and as diffusers splits it: (bfl, diffusers)."""
    rng = np.random.default_rng(seed)
    qkv, lin1 = rng.standard_normal((3 * h, h), dtype=np.float32), rng.standard_normal((3 * h + mlp, h), dtype=np.float32)
    bfl = {"double_blocks.0.img_attn.qkv.weight": ("F32", qkv), "single_blocks.0.linear1.weight": ("F32", lin1)}
    q, k, v = np.split(qkv, 3)
    sq, sk, sv, smlp = np.split(lin1, [h, 2 * h, 3 * h])
    diffusers = {"transformer_blocks.0.attn.to_q.weight": ("F32", q), "transformer_blocks.0.attn.to_k.weight": ("F32", k),
                 "transformer_blocks.0.attn.to_v.weight": ("F32", v),
                 "single_transformer_blocks.0.attn.to_q.weight": ("F32", sq),
                 "single_transformer_blocks.0.attn.to_k.weight": ("F32", sk),
                 "single_transformer_blocks.0.attn.to_v.weight": ("F32", sv),
                 "single_transformer_blocks.0.proj_mlp.weight": ("F32", smlp)}
    return bfl, diffusers


LORA_RANK = 4
LORA_MODULES = {  # PEFT module -> (in, out)
    "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_k": (8, 8),
    "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_out.0": (8, 8),
    "unet.mid_block.attentions.0.proj_in": (16, 16),
    "text_encoder.text_model.encoder.layers.0.self_attn.q_proj": (6, 6),
    "text_encoder_2.text_model.encoder.layers.1.mlp.fc1": (6, 12),
}


def peft_lora(seed=0, scale=1):
    """A PEFT state dict (torch tensors, lora_A / lora_B, no alpha) over LORA_MODULES at LORA_RANK."""
    import torch

    g = torch.Generator().manual_seed(seed)
    sd = {}
    for module, (i, o) in LORA_MODULES.items():
        sd[module + ".lora_A.weight"] = torch.randn(LORA_RANK, i * scale, generator=g)
        sd[module + ".lora_B.weight"] = torch.randn(o * scale, LORA_RANK, generator=g)
    return sd


def flux_kohya(seed=0):
    """kohya Flux LoRA on fused BFL projections; rank 2 so diffusers' "sparse" branch (rank divisible by
    the number of parts) is not taken."""
    import torch

    g = torch.Generator().manual_seed(seed)
    rank, sd = 2, {}
    for name, (i, o) in {"lora_unet_double_blocks_0_img_attn_qkv": (3072, 9216),
                         "lora_unet_double_blocks_0_txt_attn_qkv": (3072, 9216),
                         "lora_unet_double_blocks_0_img_attn_proj": (3072, 3072),
                         "lora_unet_single_blocks_0_linear1": (3072, 21504),
                         "lora_unet_single_blocks_0_linear2": (15360, 3072)}.items():
        sd[name + ".lora_down.weight"] = torch.randn(rank, i, generator=g)
        sd[name + ".lora_up.weight"] = torch.randn(o, rank, generator=g)
        sd[name + ".alpha"] = torch.tensor(float(rank))
    return sd
