"""A small, deterministic model library for `make demo` (and its test).

`build_demo_library(root)` writes a few hundred KB of tiny "Stable Diffusion"
files whose key names look like the real thing (so the fingerprint sees
unet / vae / text_encoder components), plus the Civitai seed and the Hugging
Face repo that make some of them known:

    checkpoints/toadDiffusion_v10_fp32.safetensors   Civitai, by SHA256              -> exact
    checkpoints/toadDiffusion_v10_fp16.safetensors   same Civitai version, fp16 file  -> exact
    checkpoints/old-downloads/toad_final_REAL.safetensors  copy of the fp32 file     -> renamed
    checkpoints/toad-diffusion-v1.ckpt               torch zip conversion (no torch)  -> converted
    diffusers/toad-diffusion-v1/                     diffusers conversion             -> converted
    checkpoints/frogRealism_v20.safetensors          Civitai, by SHA256               -> exact
    checkpoints/frog-realism-fp16-mine.safetensors   a home-made fp16 cast            -> precision
    loras/sparkleStyle_v1.safetensors                Civitai, by SHA256               -> exact
    loras/glow-lora-retagged.safetensors             Civitai knows it only by AutoV3  -> same-weights
    loras/my-own-lora.safetensors                    nobody knows it                  -> (none)
    vae/tiny-sd-vae.safetensors                      Hugging Face LFS file            -> renamed
    misc/free-upscaler-4x.pt                         pickle that would call os.system -> dangerous

Bytes depend only on fixed seeds, so rebuilding rewrites nothing (files keep
their mtimes and a second `register` finds them unchanged). No torch: the
.ckpt and the hostile .pt are written opcode by opcode; nothing here is ever
unpickled.
"""
from __future__ import annotations

import hashlib
import json
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import blake3
import numpy as np

HF_REPO_ID = "demo/tiny-sd-vae"
HF_VAE_PATH = "diffusion_pytorch_model.safetensors"

# What each demo file is expected to become (Match.kind, or "" for no match).
EXPECTED_MATCH = {
    "toad_fp32": "exact",
    "toad_fp16": "exact",
    "toad_renamed": "renamed",
    "toad_ckpt": "converted",
    "toad_diffusers": "converted",
    "frog_fp32": "exact",
    "frog_fp16_mine": "precision",
    "sparkle_lora": "exact",
    "glow_lora": "same-weights",
    "own_lora": "",
    "vae": "renamed",
    "evil": "",
}

# (name, shape, dtype) of a tiny SD 1.x checkpoint; real key names, toy sizes.
_CHECKPOINT_PLAN = (
    ("model.diffusion_model.input_blocks.0.0.weight", (32, 4, 3, 3), "F32"),
    ("model.diffusion_model.input_blocks.0.0.bias", (32,), "F32"),
    ("model.diffusion_model.time_embed.0.weight", (128, 32), "F32"),
    ("model.diffusion_model.middle_block.1.transformer_blocks.0.attn1.to_q.weight", (128, 128), "F32"),
    ("model.diffusion_model.out.2.weight", (4, 32, 3, 3), "F32"),
    ("first_stage_model.encoder.conv_in.weight", (32, 3, 3, 3), "F32"),
    ("first_stage_model.decoder.conv_out.weight", (3, 32, 3, 3), "F32"),
    # a 1x1 conv in the LDM VAE, a linear layer in diffusers
    ("first_stage_model.decoder.mid.attn_1.q.weight", (64, 64, 1, 1), "F32"),
    ("cond_stage_model.transformer.text_model.embeddings.token_embedding.weight", (256, 64), "F32"),
    ("cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight", (64, 64), "F32"),
    # buffers a diffusers folder does not keep: the fingerprint ignores them
    ("cond_stage_model.transformer.text_model.embeddings.position_ids", (1, 77), "I64"),
    ("alphas_cumprod", (1000,), "F32"),
)

# LDM key -> (diffusers component, key in that component, shape there)
_DIFFUSERS_NAMES = {
    "model.diffusion_model.input_blocks.0.0.weight": ("unet", "conv_in.weight", None),
    "model.diffusion_model.input_blocks.0.0.bias": ("unet", "conv_in.bias", None),
    "model.diffusion_model.time_embed.0.weight": ("unet", "time_embedding.linear_1.weight", None),
    "model.diffusion_model.middle_block.1.transformer_blocks.0.attn1.to_q.weight":
        ("unet", "mid_block.attentions.0.transformer_blocks.0.attn1.to_q.weight", None),
    "model.diffusion_model.out.2.weight": ("unet", "conv_out.weight", None),
    "first_stage_model.encoder.conv_in.weight": ("vae", "encoder.conv_in.weight", None),
    "first_stage_model.decoder.conv_out.weight": ("vae", "decoder.conv_out.weight", None),
    "first_stage_model.decoder.mid.attn_1.q.weight": ("vae", "decoder.mid_block.attentions.0.to_q.weight", (64, 64)),
    "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight":
        ("text_encoder", "text_model.embeddings.token_embedding.weight", None),
    "cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight":
        ("text_encoder", "text_model.encoder.layers.0.self_attn.q_proj.weight", None),
}

_LORA_PLAN = tuple(
    (f"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_{p}.{part}", shape, "F32")
    for p in ("q", "k", "v")
    for part, shape in (("lora_down.weight", (8, 320)), ("lora_up.weight", (320, 8)), ("alpha", ()))
)

_VAE_PLAN = (
    ("encoder.conv_in.weight", (64, 3, 3, 3), "F32"),
    ("encoder.mid_block.attentions.0.to_q.weight", (128, 128), "F32"),
    ("decoder.conv_in.weight", (64, 4, 3, 3), "F32"),
    ("decoder.up_blocks.0.resnets.0.conv1.weight", (64, 64, 3, 3), "F32"),
    ("decoder.conv_out.weight", (3, 64, 3, 3), "F32"),
    ("quant_conv.weight", (8, 8, 1, 1), "F32"),
    ("post_quant_conv.weight", (4, 4, 1, 1), "F32"),
)

_NUMPY = {"F32": np.float32, "F16": np.float16, "I64": np.int64}
_TORCH_STORAGE = {"F32": "FloatStorage", "F16": "HalfStorage", "I64": "LongStorage"}

StateDict = dict[str, tuple[str, np.ndarray]]  # name -> (safetensors dtype, array)


@dataclass
class DemoLibrary:
    root: Path
    files: dict[str, Path]  # short name (see EXPECTED_MATCH) -> path
    civitai_seed: dict  # tests.fakes.civitai seed document
    hf_repo_id: str
    hf_files: dict[str, bytes]  # path in the repo -> content
    # short name -> what Civitai / the Hub publish for it (names, hashes), for the demo's printout
    notes: dict[str, str] = field(default_factory=dict)


# --- tensors -----------------------------------------------------------------

def _state_dict(plan, seed: int) -> StateDict:
    rng = np.random.default_rng(seed)
    state: StateDict = {}
    for name, shape, dtype in plan:
        if name.endswith("position_ids"):
            array = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)
        elif name.endswith("alphas_cumprod"):
            array = np.cumprod(1.0 - np.linspace(0.00085, 0.012, shape[0], dtype=np.float32)).astype(np.float32)
        elif name.endswith(".alpha"):
            array = np.array(8.0, dtype=np.float32)
        else:
            array = (rng.standard_normal(shape, dtype=np.float32) * 0.05).astype(_NUMPY[dtype])
        state[name] = (dtype, array)
    return state


def cast_fp16(state: StateDict) -> StateDict:
    """Floating tensors to F16 with numpy's round-to-nearest-even, like torch's .half()."""
    return {k: ("F16", a.astype(np.float16)) if d == "F32" else (d, a) for k, (d, a) in state.items()}


def safetensors_bytes(state: StateDict, *, metadata: dict[str, str] | None = None) -> bytes:
    header: dict = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    offset, blobs = 0, []
    for name, (dtype, array) in state.items():
        raw = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": dtype, "shape": list(array.shape), "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        blobs.append(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


# --- torch zip checkpoints, written without torch ----------------------------------

def _p_str(text: str) -> bytes:
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw  # BINUNICODE


def _p_int(n: int) -> bytes:
    if 0 <= n < 256:
        return b"K" + bytes([n])  # BININT1
    if 0 <= n < 65536:
        return b"M" + struct.pack("<H", n)  # BININT2
    return b"J" + struct.pack("<i", n)  # BININT


def _p_tuple(items: list[bytes]) -> bytes:
    if not items:
        return b")"  # EMPTY_TUPLE
    if len(items) <= 3:
        return b"".join(items) + {1: b"\x85", 2: b"\x86", 3: b"\x87"}[len(items)]  # TUPLE1..3
    return b"(" + b"".join(items) + b"t"  # MARK ... TUPLE


def _p_global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"  # GLOBAL


_EMPTY_ORDERED_DICT = _p_global("collections", "OrderedDict") + b")R"  # GLOBAL () REDUCE


def _p_tensor(dtype: str, shape: tuple[int, ...], key: str) -> bytes:
    """torch._utils._rebuild_tensor_v2(storage, 0, size, stride, False, OrderedDict()), storage by persistent id."""
    numel = int(np.prod(shape)) if shape else 1
    strides, step = [], 1
    for dim in reversed(shape):
        strides.insert(0, step)
        step *= dim
    persistent_id = _p_tuple([_p_str("storage"), _p_global("torch", _TORCH_STORAGE[dtype]), _p_str(key),
                              _p_str("cpu"), _p_int(numel)])
    args = (b"(" + persistent_id + b"Q" + _p_int(0) + _p_tuple([_p_int(d) for d in shape])
            + _p_tuple([_p_int(s) for s in strides]) + b"\x89" + _EMPTY_ORDERED_DICT + b"t")
    return _p_global("torch._utils", "_rebuild_tensor_v2") + args + b"R"


def torch_pickle_bytes(state: StateDict, *, extra_items: bytes = b"") -> tuple[bytes, dict[str, bytes]]:
    """data.pkl of torch.save({"state_dict": OrderedDict(state)}) (protocol 2), and the storages by key.

    `extra_items`: more (key, value) opcode pairs for the outer dict.
    """
    storages: dict[str, bytes] = {}
    items = []
    for i, (name, (dtype, array)) in enumerate(state.items()):
        key = str(i)
        storages[key] = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()
        items.append(_p_str(name) + _p_tensor(dtype, tuple(array.shape), key))
    inner = _EMPTY_ORDERED_DICT + b"(" + b"".join(items) + b"u"  # MARK ... SETITEMS
    outer = b"}(" + _p_str("state_dict") + inner + extra_items + b"u"  # EMPTY_DICT MARK ... SETITEMS
    return b"\x80\x02" + outer + b".", storages


def torch_zip_bytes(data_pkl: bytes, storages: dict[str, bytes], *, archive: str = "archive") -> bytes:
    """A torch.save zip: stored (never deflated) entries, storages 64-byte aligned as torch writes them."""
    import io

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as zf:
        entries = [("data.pkl", data_pkl), ("byteorder", b"little")]
        entries += [(f"data/{key}", raw) for key, raw in storages.items()]
        entries += [("version", b"3\n"), (".data/serialization_id", b"0" * 40)]
        for name, raw in entries:
            info = zipfile.ZipInfo(f"{archive}/{name}", date_time=(2024, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            data_start = buffer.tell() + 30 + len(info.filename) + 4  # local header + name + extra header
            info.extra = struct.pack("<HH", 0x4246, -data_start % 64) + b"Z" * (-data_start % 64)  # torch's "FB" pad
            zf.writestr(info, raw)
    return buffer.getvalue()


def hostile_pickle_bytes(state: StateDict, command: str) -> bytes:
    """A .pt that looks like a checkpoint, but unpickling it would run `os.system(command)`."""
    payload = _p_str("_post_load") + _p_global("os", "system") + _p_tuple([_p_str(command)]) + b"R"
    data_pkl, storages = torch_pickle_bytes(state, extra_items=payload)
    return torch_zip_bytes(data_pkl, storages)


# --- diffusers ---------------------------------------------------------------------

def diffusers_folder_files(state: StateDict) -> dict[str, bytes]:
    """A diffusers folder's files (relative path -> bytes) holding `state`'s weights under diffusers names."""
    parts: dict[str, StateDict] = {"unet": {}, "vae": {}, "text_encoder": {}}
    for name, (dtype, array) in state.items():
        if name not in _DIFFUSERS_NAMES:
            continue  # schedule buffers and position_ids: diffusers keeps them elsewhere or not at all
        component, new_name, new_shape = _DIFFUSERS_NAMES[name]
        parts[component][new_name] = (dtype, array.reshape(new_shape) if new_shape else array)
    model_index = {
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.27.0",
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", "PNDMScheduler"], "safety_checker": [None, None], "feature_extractor": [None, None],
    }
    files = {"model_index.json": json.dumps(model_index, indent=2).encode()}
    files["unet/diffusion_pytorch_model.safetensors"] = safetensors_bytes(parts["unet"])
    files["unet/config.json"] = b'{"_class_name": "UNet2DConditionModel", "sample_size": 8}\n'
    files["vae/diffusion_pytorch_model.safetensors"] = safetensors_bytes(parts["vae"])
    files["vae/config.json"] = b'{"_class_name": "AutoencoderKL", "latent_channels": 4}\n'
    files["text_encoder/model.safetensors"] = safetensors_bytes(parts["text_encoder"])
    files["text_encoder/config.json"] = b'{"architectures": ["CLIPTextModel"], "hidden_size": 64}\n'
    files["scheduler/scheduler_config.json"] = b'{"_class_name": "PNDMScheduler", "num_train_timesteps": 1000}\n'
    files["tokenizer/vocab.json"] = b'{"a": 0, "b": 1}\n'
    return files


# --- Civitai seed ------------------------------------------------------------------

def civitai_file_entry(data: bytes, name: str, *, fp: str, size_kind: str = "pruned",
                       format: str = "SafeTensor") -> dict:
    """A seed file entry with the hashes Civitai would store for `data`."""
    hashes = {
        "SHA256": hashlib.sha256(data).hexdigest().upper(),
        "AutoV2": hashlib.sha256(data).hexdigest()[:10].upper(),
        # Civitai prints the CRC32's bytes little-endian first
        "CRC32": zlib.crc32(data).to_bytes(4, "little").hex().upper(),
        "BLAKE3": blake3.blake3(data).hexdigest().upper(),
    }
    if format == "SafeTensor":
        header_len = struct.unpack("<Q", data[:8])[0]
        hashes["AutoV3"] = hashlib.sha256(data[8 + header_len:]).hexdigest()[:12].upper()
    return {"name": name, "sizeKB": round(len(data) / 1024, 2), "hashes": hashes,
            "metadata": {"format": format, "fp": fp, "size": size_kind}}


# --- the library -------------------------------------------------------------------

def _write_if_changed(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not (path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    return path


def build_demo_library(root: Path) -> DemoLibrary:
    """Write the demo files under `root` (idempotent) and return what the fakes should publish."""
    root = Path(root)
    toad = _state_dict(_CHECKPOINT_PLAN, seed=1)
    frog = _state_dict(_CHECKPOINT_PLAN, seed=2)
    meta = {"format": "pt"}
    toad32 = safetensors_bytes(toad, metadata=meta)
    toad16 = safetensors_bytes(cast_fp16(toad), metadata=meta)
    frog32 = safetensors_bytes(frog, metadata=meta)
    # Not Civitai's fp16 file: someone's own cast, with their own metadata.
    frog16_mine = safetensors_bytes(cast_fp16(frog), metadata={"format": "pt", "converted_by": "me, with a script"})
    sparkle = safetensors_bytes(_state_dict(_LORA_PLAN, seed=3), metadata={"ss_output_name": "sparkleStyle"})
    glow_state = _state_dict(_LORA_PLAN, seed=4)
    glow_published = safetensors_bytes(glow_state, metadata={"ss_output_name": "glowLora", "ss_tag_frequency": "{}"})
    # Same tensor bytes, header rewritten by a metadata editor: only AutoV3 still agrees.
    glow_local = safetensors_bytes(glow_state, metadata={"ss_output_name": "glowLora", "modelspec.title": "my tags"})
    own = safetensors_bytes(_state_dict(_LORA_PLAN, seed=5), metadata={"ss_output_name": "my-own-lora"})
    vae = safetensors_bytes(_state_dict(_VAE_PLAN, seed=6))
    ckpt_pkl, ckpt_storages = torch_pickle_bytes(toad)
    evil = hostile_pickle_bytes(
        _state_dict(_VAE_PLAN[:2], seed=7),
        "echo 'ModelXRef demo: a loader would have run this command' > /tmp/modelxref-demo-pwned")

    files = {
        "toad_fp32": _write_if_changed(root / "checkpoints/toadDiffusion_v10_fp32.safetensors", toad32),
        "toad_fp16": _write_if_changed(root / "checkpoints/toadDiffusion_v10_fp16.safetensors", toad16),
        "toad_renamed": _write_if_changed(root / "checkpoints/old-downloads/toad_final_REAL.safetensors", toad32),
        "toad_ckpt": _write_if_changed(root / "checkpoints/toad-diffusion-v1.ckpt",
                                       torch_zip_bytes(ckpt_pkl, ckpt_storages)),
        "frog_fp32": _write_if_changed(root / "checkpoints/frogRealism_v20.safetensors", frog32),
        "frog_fp16_mine": _write_if_changed(root / "checkpoints/frog-realism-fp16-mine.safetensors", frog16_mine),
        "sparkle_lora": _write_if_changed(root / "loras/sparkleStyle_v1.safetensors", sparkle),
        "glow_lora": _write_if_changed(root / "loras/glow-lora-retagged.safetensors", glow_local),
        "own_lora": _write_if_changed(root / "loras/my-own-lora.safetensors", own),
        "vae": _write_if_changed(root / "vae/tiny-sd-vae.safetensors", vae),
        "evil": _write_if_changed(root / "misc/free-upscaler-4x.pt", evil),
    }
    folder = root / "diffusers/toad-diffusion-v1"
    for rel, data in diffusers_folder_files(toad).items():
        _write_if_changed(folder / rel, data)
    files["toad_diffusers"] = folder

    seed = {"models": [
        {"name": "Toad Diffusion", "type": "Checkpoint", "tags": ["base model", "toads"], "versions": [
            {"name": "v1.0", "base_model": "SD 1.5", "files": [
                civitai_file_entry(toad32, "toadDiffusion_v10_fp32.safetensors", fp="fp32", size_kind="full"),
                civitai_file_entry(toad16, "toadDiffusion_v10_fp16.safetensors", fp="fp16"),
            ]}]},
        {"name": "Frog Realism", "type": "Checkpoint", "tags": ["photorealistic"], "versions": [
            {"name": "v2.0", "base_model": "SD 1.5", "files": [
                civitai_file_entry(frog32, "frogRealism_v20.safetensors", fp="fp32", size_kind="full")]}]},
        {"name": "Sparkle Style", "type": "LORA", "tags": ["style"], "versions": [
            {"name": "v1", "base_model": "SD 1.5", "trained_words": ["sparkle style"],
             # Generated by the stand-in; the R-rated one shows the NSFW blur.
             "images": [{"nsfw_level": 1, "color": [240, 200, 40]}, {"nsfw_level": 4, "format": "jpeg"}], "files": [
                civitai_file_entry(sparkle, "sparkleStyle_v1.safetensors", fp="fp32")]}]},
        {"name": "Glow LoRA", "type": "LORA", "tags": ["lighting"], "versions": [
            {"name": "v1", "base_model": "SD 1.5", "trained_words": ["glowing"],
             "images": [{"nsfw_level": 1, "color": [60, 200, 230]}], "files": [
                civitai_file_entry(glow_published, "glowLora_v1.safetensors", fp="fp32")]}]},
    ]}
    hf_files = {
        HF_VAE_PATH: vae,
        "config.json": b'{"_class_name": "AutoencoderKL", "latent_channels": 4}\n',
        "README.md": b"# tiny-sd-vae\n\nA toy VAE for the ModelXRef demo.\n",
    }
    notes = {
        "toad_fp32": "Civitai: Toad Diffusion v1.0, fp32 file (SHA256)",
        "toad_fp16": "Civitai: Toad Diffusion v1.0, fp16 file of the same version (SHA256)",
        "toad_renamed": "same bytes as toadDiffusion_v10_fp32.safetensors under another name",
        "toad_ckpt": ".ckpt (torch zip) holding the same tensors as the fp32 file",
        "toad_diffusers": "diffusers folder converted from the fp32 file (keys renamed, buffers dropped)",
        "frog_fp32": "Civitai: Frog Realism v2.0 (SHA256)",
        "frog_fp16_mine": "a home-made fp16 cast of frogRealism_v20: unknown bytes, same weights at fp16",
        "sparkle_lora": "Civitai: Sparkle Style v1 (SHA256)",
        "glow_lora": "Civitai: Glow LoRA v1, but the header was edited: only the AutoV3 (tensor bytes) agrees",
        "own_lora": "unknown everywhere",
        "vae": f"Hugging Face: {HF_REPO_ID}/{HF_VAE_PATH} (LFS sha256)",
        "evil": "a .pt whose pickle calls os.system when loaded: flagged, never executed",
    }
    return DemoLibrary(root=root, files=files, civitai_seed=seed, hf_repo_id=HF_REPO_ID, hf_files=hf_files, notes=notes)
