"""Tiny but architecturally complete SDXL, Flux and SD3 models, built with the real diffusers /
transformers classes (random init, small configs, no downloads) and written in every layout the
fingerprint must link: diffusers folders, original single files (.safetensors and zip .ckpt), and
fp16 / bf16 casts. Built once per process (per test session) and per seed.

The original layouts come from real converters: SDXL through diffusers' own
scripts/convert_diffusers_to_original_sdxl.py (tests/vendor/diffusers_convert); Flux and SD3 are
written in the BFL / Stability layout by inverting diffusers' single-file converters, and each
inversion is checked against the converter itself (the converted-back state dict equals the model's,
key for key and bit for bit), so the files are what those converters read.
"""
from __future__ import annotations

import atexit
import functools
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

_ROOT: Path | None = None


def _root() -> Path:
    global _ROOT
    if _ROOT is None:
        _ROOT = Path(tempfile.mkdtemp(prefix="modelxref-families-"))
        atexit.register(shutil.rmtree, _ROOT, ignore_errors=True)
    return _ROOT


@dataclass(frozen=True)
class FamilyFiles:
    diffusers: Path  # a diffusers pipeline folder (model_index.json + component subfolders)
    original: Path  # the single-file original layout, fp32 safetensors
    fp16: Path
    bf16: Path
    ckpt: Path | None = None  # zip torch.save({"state_dict": ...}) of `original` (SDXL only)


def _save(state_dict: dict[str, torch.Tensor], path: Path, dtype: torch.dtype | None = None) -> Path:
    tensors = {k: (v.to(dtype) if dtype is not None else v).contiguous().clone() for k, v in state_dict.items()}
    save_file(tensors, str(path))
    return path


def _write_variants(name: str, original: dict[str, torch.Tensor], folder: Path, ckpt: bool) -> FamilyFiles:
    out = folder.parent
    files = FamilyFiles(
        diffusers=folder, original=_save(original, out / f"{name}.safetensors"),
        fp16=_save(original, out / f"{name}-fp16.safetensors", torch.float16),
        bf16=_save(original, out / f"{name}-bf16.safetensors", torch.bfloat16),
        ckpt=out / f"{name}.ckpt" if ckpt else None)
    if ckpt:
        torch.save({"state_dict": {k: v.contiguous().clone() for k, v in original.items()}}, files.ckpt)
    return files


def _pipeline_folder(folder: Path, pipeline: str, components: dict[str, tuple[str, str, object]]) -> Path:
    """A diffusers pipeline folder holding only weight components (no tokenizer/scheduler: nothing here
    may download their vocabularies); model_index.json lists them as diffusers' save_pretrained does."""
    folder.mkdir(parents=True)
    index = {"_class_name": pipeline, "_diffusers_version": "0.42.1"}
    for name, (library, class_name, model) in components.items():
        model.save_pretrained(folder / name)
        index[name] = [library, class_name]
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    return folder


# --- SDXL -------------------------------------------------------------------

@functools.cache
def sdxl(seed: int = 0) -> FamilyFiles:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from tests.vendor.diffusers_convert.convert_diffusers_to_original_sdxl import convert_pipeline_state_dicts

    torch.manual_seed(seed)
    # SDXL base's layout at toy width: 3 levels (plain, cross-attn, cross-attn), 2 resnets each,
    # linear projections, two text encoders whose hidden states concatenate to cross_attention_dim,
    # and the "text_time" added embedding fed by te2's pooled projection plus 6 time ids.
    te1_cfg = CLIPTextConfig(vocab_size=99, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                             num_attention_heads=2, max_position_embeddings=16, projection_dim=16)
    te2_cfg = CLIPTextConfig(vocab_size=99, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=4, max_position_embeddings=16, projection_dim=24,
                             hidden_act="gelu")
    text_encoder = CLIPTextModel(te1_cfg)
    text_encoder_2 = CLIPTextModelWithProjection(te2_cfg)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(16, 32, 32),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4, 4), transformer_layers_per_block=(1, 1, 2), norm_num_groups=8,
        cross_attention_dim=16 + 32, use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, projection_class_embeddings_input_dim=6 * 8 + 24)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=8,
        block_out_channels=(8, 16, 16, 16), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4)
    out = _root() / f"sdxl-{seed}"
    folder = _pipeline_folder(out / "diffusers", "StableDiffusionXLPipeline", {
        "unet": ("diffusers", "UNet2DConditionModel", unet), "vae": ("diffusers", "AutoencoderKL", vae),
        "text_encoder": ("transformers", "CLIPTextModel", text_encoder),
        "text_encoder_2": ("transformers", "CLIPTextModelWithProjection", text_encoder_2)})
    original = convert_pipeline_state_dicts(unet.state_dict(), vae.state_dict(), text_encoder.state_dict(),
                                            text_encoder_2.state_dict())
    _check_sdxl_round_trip(original, text_encoder_2)
    return _write_variants("sdxl", original, folder, ckpt=True)


def _check_sdxl_round_trip(original: dict[str, torch.Tensor], text_encoder_2) -> None:
    """diffusers' own single-file loader reads the vendored script's OpenCLIP layout back bit for bit."""
    from diffusers.loaders.single_file_utils import convert_open_clip_checkpoint

    back = convert_open_clip_checkpoint(text_encoder_2, dict(original), prefix="conditioner.embedders.1.model.")
    mine = text_encoder_2.state_dict()
    assert set(back) == set(mine), set(back) ^ set(mine)
    assert all(torch.equal(back[k], mine[k]) for k in mine)


# --- Flux -------------------------------------------------------------------

def _flux_to_bfl(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of diffusers' convert_flux_transformer_checkpoint_to_diffusers."""
    sd = dict(sd)
    bfl: dict[str, torch.Tensor] = {}

    def swap(w):  # diffusers' swap_scale_shift is its own inverse
        a, b = w.chunk(2, dim=0)
        return torch.cat([b, a], dim=0)

    simple = {"time_in.in_layer": "time_text_embed.timestep_embedder.linear_1",
              "time_in.out_layer": "time_text_embed.timestep_embedder.linear_2",
              "vector_in.in_layer": "time_text_embed.text_embedder.linear_1",
              "vector_in.out_layer": "time_text_embed.text_embedder.linear_2",
              "guidance_in.in_layer": "time_text_embed.guidance_embedder.linear_1",
              "guidance_in.out_layer": "time_text_embed.guidance_embedder.linear_2",
              "txt_in": "context_embedder", "img_in": "x_embedder", "final_layer.linear": "proj_out"}
    for b, d in simple.items():
        for p in ("weight", "bias"):
            if f"{d}.{p}" in sd:
                bfl[f"{b}.{p}"] = sd.pop(f"{d}.{p}")
    for p in ("weight", "bias"):
        bfl[f"final_layer.adaLN_modulation.1.{p}"] = swap(sd.pop(f"norm_out.linear.{p}"))
    double = sorted({int(k.split(".")[1]) for k in sd if k.startswith("transformer_blocks.")})
    for i in double:
        d, b = f"transformer_blocks.{i}.", f"double_blocks.{i}."
        pairs = {"img_mod.lin": "norm1.linear", "txt_mod.lin": "norm1_context.linear",
                 "img_mlp.0": "ff.net.0.proj", "img_mlp.2": "ff.net.2", "txt_mlp.0": "ff_context.net.0.proj",
                 "txt_mlp.2": "ff_context.net.2", "img_attn.proj": "attn.to_out.0", "txt_attn.proj": "attn.to_add_out"}
        for p in ("weight", "bias"):
            for bk, dk in pairs.items():
                bfl[f"{b}{bk}.{p}"] = sd.pop(f"{d}{dk}.{p}")
            bfl[f"{b}img_attn.qkv.{p}"] = torch.cat([sd.pop(f"{d}attn.to_{x}.{p}") for x in "qkv"])
            bfl[f"{b}txt_attn.qkv.{p}"] = torch.cat([sd.pop(f"{d}attn.add_{x}_proj.{p}") for x in "qkv"])
        for bk, dk in {"img_attn.norm.query_norm": "attn.norm_q", "img_attn.norm.key_norm": "attn.norm_k",
                       "txt_attn.norm.query_norm": "attn.norm_added_q", "txt_attn.norm.key_norm": "attn.norm_added_k"}.items():
            bfl[f"{b}{bk}.scale"] = sd.pop(f"{d}{dk}.weight")
    single = sorted({int(k.split(".")[1]) for k in sd if k.startswith("single_transformer_blocks.")})
    for i in single:
        d, b = f"single_transformer_blocks.{i}.", f"single_blocks.{i}."
        for p in ("weight", "bias"):
            bfl[f"{b}modulation.lin.{p}"] = sd.pop(f"{d}norm.linear.{p}")
            bfl[f"{b}linear2.{p}"] = sd.pop(f"{d}proj_out.{p}")
            bfl[f"{b}linear1.{p}"] = torch.cat([*(sd.pop(f"{d}attn.to_{x}.{p}") for x in "qkv"), sd.pop(f"{d}proj_mlp.{p}")])
        bfl[f"{b}norm.query_norm.scale"] = sd.pop(f"{d}attn.norm_q.weight")
        bfl[f"{b}norm.key_norm.scale"] = sd.pop(f"{d}attn.norm_k.weight")
    assert not sd, f"not inverted: {sorted(sd)}"
    return bfl


@functools.cache
def flux(seed: int = 0) -> FamilyFiles:
    from diffusers import FluxTransformer2DModel

    from tests.vendor.diffusers_convert.single_file_flux import convert_flux_transformer_checkpoint_to_diffusers

    torch.manual_seed(seed)
    # FLUX.1 dev's layout at toy width: double and single blocks, guidance embedder, qk RMS norms.
    model = FluxTransformer2DModel(patch_size=1, in_channels=8, num_layers=2, num_single_layers=2,
                                   attention_head_dim=8, num_attention_heads=2, joint_attention_dim=16,
                                   pooled_projection_dim=12, guidance_embeds=True, axes_dims_rope=(2, 2, 4))
    mine = model.state_dict()
    bfl = {"model.diffusion_model." + k: v for k, v in _flux_to_bfl(mine).items()}  # as ComfyUI saves it
    back = convert_flux_transformer_checkpoint_to_diffusers(dict(bfl))
    assert set(back) == set(mine) and all(torch.equal(back[k], mine[k]) for k in mine)
    out = _root() / f"flux-{seed}"
    folder = _pipeline_folder(out / "diffusers", "FluxPipeline",
                              {"transformer": ("diffusers", "FluxTransformer2DModel", model)})
    return _write_variants("flux", bfl, folder, ckpt=False)


# --- SD3 --------------------------------------------------------------------

def _sd3_to_stability(sd: dict[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    """The inverse of diffusers' convert_sd3_transformer_checkpoint_to_diffusers."""
    sd = dict(sd)
    out: dict[str, torch.Tensor] = {"pos_embed": sd.pop("pos_embed.pos_embed")}

    def swap(w):
        a, b = w.chunk(2, dim=0)
        return torch.cat([b, a], dim=0)

    simple = {"x_embedder.proj": "pos_embed.proj", "t_embedder.mlp.0": "time_text_embed.timestep_embedder.linear_1",
              "t_embedder.mlp.2": "time_text_embed.timestep_embedder.linear_2", "context_embedder": "context_embedder",
              "y_embedder.mlp.0": "time_text_embed.text_embedder.linear_1",
              "y_embedder.mlp.2": "time_text_embed.text_embedder.linear_2", "final_layer.linear": "proj_out"}
    for p in ("weight", "bias"):
        for o, d in simple.items():
            out[f"{o}.{p}"] = sd.pop(f"{d}.{p}")
        out[f"final_layer.adaLN_modulation.1.{p}"] = swap(sd.pop(f"norm_out.linear.{p}"))
    for i in range(num_layers):
        d, o = f"transformer_blocks.{i}.", f"joint_blocks.{i}."
        last = i == num_layers - 1
        for p in ("weight", "bias"):
            out[f"{o}x_block.attn.qkv.{p}"] = torch.cat([sd.pop(f"{d}attn.to_{x}.{p}") for x in "qkv"])
            out[f"{o}context_block.attn.qkv.{p}"] = torch.cat([sd.pop(f"{d}attn.add_{x}_proj.{p}") for x in "qkv"])
            pairs = {"x_block.attn.proj": "attn.to_out.0", "x_block.adaLN_modulation.1": "norm1.linear",
                     "x_block.mlp.fc1": "ff.net.0.proj", "x_block.mlp.fc2": "ff.net.2"}
            if not last:
                pairs |= {"context_block.attn.proj": "attn.to_add_out",
                          "context_block.adaLN_modulation.1": "norm1_context.linear",
                          "context_block.mlp.fc1": "ff_context.net.0.proj", "context_block.mlp.fc2": "ff_context.net.2"}
            else:
                out[f"{o}context_block.adaLN_modulation.1.{p}"] = swap(sd.pop(f"{d}norm1_context.linear.{p}"))
            if f"{d}attn2.to_q.{p}" in sd:
                out[f"{o}x_block.attn2.qkv.{p}"] = torch.cat([sd.pop(f"{d}attn2.to_{x}.{p}") for x in "qkv"])
                pairs["x_block.attn2.proj"] = "attn2.to_out.0"
            for ok, dk in pairs.items():
                out[f"{o}{ok}.{p}"] = sd.pop(f"{d}{dk}.{p}")
        norms = {"x_block.attn.ln_q": "attn.norm_q", "x_block.attn.ln_k": "attn.norm_k",
                 "context_block.attn.ln_q": "attn.norm_added_q", "context_block.attn.ln_k": "attn.norm_added_k",
                 "x_block.attn2.ln_q": "attn2.norm_q", "x_block.attn2.ln_k": "attn2.norm_k"}
        for ok, dk in norms.items():
            if f"{d}{dk}.weight" in sd:
                out[f"{o}{ok}.weight"] = sd.pop(f"{d}{dk}.weight")
    assert not sd, f"not inverted: {sorted(sd)}"
    return out


@functools.cache
def sd3(seed: int = 0) -> FamilyFiles:
    from diffusers import SD3Transformer2DModel
    from diffusers.loaders.single_file_utils import convert_sd3_transformer_checkpoint_to_diffusers

    torch.manual_seed(seed)
    # SD3.5 medium's layout at toy width: MMDiT joint blocks, a dual-attention (attn2) block, qk RMS
    # norms, and the context-pre-only last block whose context modulation diffusers swaps.
    model = SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=4, num_layers=3, attention_head_dim=8,
                                  num_attention_heads=2, joint_attention_dim=16, caption_projection_dim=16,
                                  pooled_projection_dim=12, out_channels=4, pos_embed_max_size=8,
                                  dual_attention_layers=(0,), qk_norm="rms_norm")
    mine = model.state_dict()
    original = {"model.diffusion_model." + k: v for k, v in _sd3_to_stability(mine, 3).items()}
    back = convert_sd3_transformer_checkpoint_to_diffusers(dict(original))
    assert set(back) == set(mine) and all(torch.equal(back[k], mine[k]) for k in mine)
    out = _root() / f"sd3-{seed}"
    folder = _pipeline_folder(out / "diffusers", "StableDiffusion3Pipeline",
                              {"transformer": ("diffusers", "SD3Transformer2DModel", model)})
    return _write_variants("sd3", original, folder, ckpt=False)
