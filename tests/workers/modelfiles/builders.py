"""Test-only builders: safetensors files written by our own writer, and a tiny
synthetic SD 1.x checkpoint with its diffusers conversion and casts.

torch is allowed here (tests only): casts go through torch so the
fingerprint's numpy casts are checked against an independent implementation.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import torch

# numpy dtype -> safetensors dtype for arrays we write directly.
_ST_DTYPES = {
    np.dtype("bool"): "BOOL", np.dtype("uint8"): "U8", np.dtype("int8"): "I8",
    np.dtype("int16"): "I16", np.dtype("uint16"): "U16", np.dtype("float16"): "F16",
    np.dtype("int32"): "I32", np.dtype("uint32"): "U32", np.dtype("float32"): "F32",
    np.dtype("int64"): "I64", np.dtype("uint64"): "U64", np.dtype("float64"): "F64",
    np.dtype("complex64"): "C64",
}
_TORCH_ST_DTYPES = {
    torch.bool: "BOOL", torch.uint8: "U8", torch.int8: "I8", torch.int16: "I16",
    torch.float16: "F16", torch.bfloat16: "BF16", torch.int32: "I32", torch.float32: "F32",
    torch.int64: "I64", torch.float64: "F64", torch.complex64: "C64",
    torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2",
}


def tensor_bytes(value) -> tuple[str, tuple[int, ...], bytes]:
    """(safetensors dtype, shape, little-endian C-order bytes) of a torch tensor or numpy array."""
    if isinstance(value, torch.Tensor):
        t = value.detach().contiguous().cpu()
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        return _TORCH_ST_DTYPES[t.dtype], tuple(t.shape), raw
    a = np.ascontiguousarray(value)
    return _ST_DTYPES[a.dtype.newbyteorder("=")], tuple(a.shape), a.astype(a.dtype.newbyteorder("<")).tobytes()


def safetensors_bytes(tensors: dict, *, metadata: dict[str, str] | None = None) -> bytes:
    """A valid safetensors file, laid out like the reference writer: header
    padded with spaces to a multiple of 8, tensors in the given order."""
    header: dict = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    chunks = []
    offset = 0
    for name, value in tensors.items():
        dtype, shape, raw = tensor_bytes(value)
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    return raw_safetensors(header, b"".join(chunks))


def raw_safetensors(header: dict | bytes | str, data: bytes = b"", *, pad: bool = True) -> bytes:
    """Assemble a file from an arbitrary header (dict, or JSON text as given) and data."""
    if isinstance(header, dict):
        header = json.dumps(header, separators=(",", ":"))
    if isinstance(header, str):
        header = header.encode("utf-8")
    if pad:
        header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + data


def write_safetensors(path: Path, tensors: dict, *, metadata: dict[str, str] | None = None) -> Path:
    path.write_bytes(safetensors_bytes(tensors, metadata=metadata))
    return path


# --- a tiny SD 1.x checkpoint ------------------------------------------------
# (single-file key, diffusers component, diffusers key, shape). Sizes keep the
# real proportions roughly: the UNet holds most bytes.
_C = 8  # VAE attention channels
SD_LAYOUT: list[tuple[str, str, str, tuple[int, ...]]] = [
    ("model.diffusion_model.time_embed.0.weight", "unet", "time_embedding.linear_1.weight", (128, 32)),
    ("model.diffusion_model.time_embed.0.bias", "unet", "time_embedding.linear_1.bias", (128,)),
    ("model.diffusion_model.time_embed.2.weight", "unet", "time_embedding.linear_2.weight", (128, 128)),
    ("model.diffusion_model.input_blocks.0.0.weight", "unet", "conv_in.weight", (32, 4, 3, 3)),
    ("model.diffusion_model.input_blocks.0.0.bias", "unet", "conv_in.bias", (32,)),
    ("model.diffusion_model.input_blocks.1.1.proj_in.weight", "unet",
     "down_blocks.0.attentions.0.proj_in.weight", (32, 32, 1, 1)),
    ("model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight", "unet",
     "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight", (32, 32)),
    ("model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight", "unet",
     "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight", (32, 16)),
    ("model.diffusion_model.middle_block.1.norm.weight", "unet", "mid_block.attentions.0.norm.weight", (32,)),
    ("model.diffusion_model.middle_block.0.in_layers.2.weight", "unet",
     "mid_block.resnets.0.conv1.weight", (32, 32, 3, 3)),
    ("model.diffusion_model.out.0.weight", "unet", "conv_norm_out.weight", (32,)),
    ("model.diffusion_model.out.2.weight", "unet", "conv_out.weight", (4, 32, 3, 3)),
    ("first_stage_model.encoder.conv_in.weight", "vae", "encoder.conv_in.weight", (_C, 3, 3, 3)),
    ("first_stage_model.encoder.mid.attn_1.norm.weight", "vae", "encoder.mid_block.attentions.0.group_norm.weight", (_C,)),
    ("first_stage_model.encoder.mid.attn_1.q.weight", "vae", "encoder.mid_block.attentions.0.to_q.weight", (_C, _C, 1, 1)),
    ("first_stage_model.encoder.mid.attn_1.q.bias", "vae", "encoder.mid_block.attentions.0.to_q.bias", (_C,)),
    ("first_stage_model.encoder.mid.attn_1.k.weight", "vae", "encoder.mid_block.attentions.0.to_k.weight", (_C, _C, 1, 1)),
    ("first_stage_model.encoder.mid.attn_1.v.weight", "vae", "encoder.mid_block.attentions.0.to_v.weight", (_C, _C, 1, 1)),
    ("first_stage_model.encoder.mid.attn_1.proj_out.weight", "vae",
     "encoder.mid_block.attentions.0.to_out.0.weight", (_C, _C, 1, 1)),
    ("first_stage_model.decoder.conv_out.weight", "vae", "decoder.conv_out.weight", (3, _C, 3, 3)),
    ("first_stage_model.quant_conv.weight", "vae", "quant_conv.weight", (8, 8, 1, 1)),
    ("first_stage_model.post_quant_conv.weight", "vae", "post_quant_conv.weight", (4, 4, 1, 1)),
    ("cond_stage_model.transformer.text_model.embeddings.token_embedding.weight", "text_encoder",
     "text_model.embeddings.token_embedding.weight", (100, 16)),
    ("cond_stage_model.transformer.text_model.embeddings.position_embedding.weight", "text_encoder",
     "text_model.embeddings.position_embedding.weight", (77, 16)),
    ("cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight", "text_encoder",
     "text_model.encoder.layers.0.self_attn.q_proj.weight", (16, 16)),
    ("cond_stage_model.transformer.text_model.encoder.layers.0.layer_norm1.weight", "text_encoder",
     "text_model.encoder.layers.0.layer_norm1.weight", (16,)),
    ("cond_stage_model.transformer.text_model.final_layer_norm.weight", "text_encoder",
     "text_model.final_layer_norm.weight", (16,)),
]
POSITION_IDS_KEY = "cond_stage_model.transformer.text_model.embeddings.position_ids"
# Extras of a single-file training checkpoint that a diffusers folder lacks.
SCHEDULE_KEYS = ("betas", "alphas_cumprod", "alphas_cumprod_prev")


def sd_weights(seed: int = 0) -> dict[str, torch.Tensor]:
    """The weights only (single-file names), fp32. LayerNorm weights are ones,
    so equal tensors appear more than once, as in real models."""
    gen = torch.Generator().manual_seed(seed)
    weights = {}
    for key, _component, _dkey, shape in SD_LAYOUT:
        if key.endswith(("norm.weight", "norm1.weight", "out.0.weight")):
            weights[key] = torch.ones(shape)
        else:
            weights[key] = torch.randn(shape, generator=gen) * 0.05
    return weights


def sd_checkpoint(seed: int = 0, *, with_extras: bool = True) -> dict[str, torch.Tensor]:
    """A single-file SD 1.x state dict: weights plus the buffers and EMA copy of
    a training checkpoint."""
    state = sd_weights(seed)
    if with_extras:
        betas = torch.linspace(0.00085, 0.012, 1000, dtype=torch.float64).float()
        alphas_cumprod = torch.cumprod(1 - betas, 0)
        state["betas"] = betas
        state["alphas_cumprod"] = alphas_cumprod
        state["alphas_cumprod_prev"] = torch.cat([torch.ones(1), alphas_cumprod[:-1]])
        state[POSITION_IDS_KEY] = torch.arange(77, dtype=torch.int64)[None]
        state["model_ema.decay"] = torch.tensor(0.9999)
        state["model_ema.num_updates"] = torch.tensor(12345, dtype=torch.int32)
        state["model_ema.diffusion_modeltime_embed0weight"] = state["model.diffusion_model.time_embed.0.weight"] * 0.99
    return state


def fine_tune(state: dict[str, torch.Tensor], *, seed: int = 1) -> dict[str, torch.Tensor]:
    """Every UNet tensor changed, VAE and text encoder kept (as most fine-tunes do)."""
    gen = torch.Generator().manual_seed(seed)
    return {k: (v + torch.randn(v.shape, generator=gen) * 1e-3 if k.startswith("model.diffusion_model.") else v)
            for k, v in state.items()}


def cast(state: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}


def component_bytes(state: dict[str, torch.Tensor]) -> dict[str, int]:
    """Stored bytes per component of the weights in `state` (layout keys only)."""
    sizes: dict[str, int] = {}
    for key, component, _dkey, _shape in SD_LAYOUT:
        if key in state:
            sizes[component] = sizes.get(component, 0) + state[key].numel() * state[key].element_size()
    return sizes


def to_diffusers(state: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """What a converter does: rename, split into components, drop the extras,
    store VAE attention 1x1 convs as linear weights; older transformers keep
    position_ids in the text encoder."""
    components: dict[str, dict[str, torch.Tensor]] = {"unet": {}, "vae": {}, "text_encoder": {}}
    for key, component, dkey, _shape in SD_LAYOUT:
        value = state[key]
        if component == "vae" and ".attentions." in dkey and value.ndim == 4:
            value = value[:, :, 0, 0].contiguous()
        components[component][dkey] = value
    if POSITION_IDS_KEY in state:
        components["text_encoder"]["text_model.embeddings.position_ids"] = state[POSITION_IDS_KEY]
    return components


MODEL_INDEX = {
    "_class_name": "StableDiffusionPipeline",
    "_diffusers_version": "0.30.0",
    "feature_extractor": ["transformers", "CLIPImageProcessor"],
    "requires_safety_checker": True,
    "safety_checker": [None, None],
    "scheduler": ["diffusers", "PNDMScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}
WEIGHT_NAMES = {"unet": "diffusion_pytorch_model", "vae": "diffusion_pytorch_model", "text_encoder": "model"}


def write_diffusers_folder(root: Path, state: dict[str, torch.Tensor], *, variant: str | None = None,
                           model_index: dict | None = None) -> Path:
    """A diffusers folder (safetensors weights) converted from a single-file state dict.
    Called again on the same root with a `variant`, it adds variant files."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "model_index.json").write_text(json.dumps(model_index or MODEL_INDEX))
    for folder in ("scheduler", "tokenizer"):
        (root / folder).mkdir(exist_ok=True)
    (root / "scheduler" / "scheduler_config.json").write_text('{"_class_name": "PNDMScheduler"}')
    (root / "tokenizer" / "vocab.json").write_text("{}")
    tag = f".{variant}" if variant else ""
    for component, tensors in to_diffusers(state).items():
        (root / component).mkdir(exist_ok=True)
        (root / component / "config.json").write_text("{}")
        write_safetensors(root / component / f"{WEIGHT_NAMES[component]}{tag}.safetensors", tensors)
    return root


def assert_arrays_equal(array: np.ndarray, expected: torch.Tensor) -> None:
    """Compare a reader's array with the tensor that was written, bit for bit."""
    dtype, shape, raw = tensor_bytes(expected)
    assert tuple(array.shape) == shape
    assert np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes() == raw
