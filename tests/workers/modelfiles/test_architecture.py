"""Family and kind from tensor names and shapes, and the per-family components they come with.

Key names are the real ones of each layout (LDM / SGM single files, diffusers, ComfyUI all-in-one,
BFL, kohya, PEFT, xlabs); tensors are tiny except where a shape is the evidence.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from tests.fakes.demo_library import safetensors_bytes, torch_pickle_bytes, torch_zip_bytes
from workers.modelfiles.analyse import analyse_path
from workers.modelfiles.architecture import RULES, ArchitectureDetector, detect
from workers.modelfiles.fingerprint import fingerprint_path, shared_components

MD = "model.diffusion_model."
SD1_TE = "cond_stage_model.transformer.text_model."
XL_TE1 = "conditioner.embedders.0.transformer.text_model."
XL_TE2 = "conditioner.embedders.1.model."
T5 = "encoder.block.0.layer.0.SelfAttention.q.weight"

CASES = {
    "SD 1.x checkpoint": ("SD 1.x", "checkpoint", [
        (MD + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight", (320, 768)),
        (SD1_TE + "embeddings.token_embedding.weight", (49408, 768)),
        ("first_stage_model.decoder.conv_in.weight", (512, 4, 3, 3))]),
    "SD 2.x checkpoint": ("SD 2.x", "checkpoint", [
        (MD + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight", (320, 1024)),
        ("cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight", (3072, 1024))]),
    "SDXL checkpoint": ("SDXL", "checkpoint", [
        (MD + "label_emb.0.0.weight", (1280, 2816)),
        (MD + "input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight", (640, 2048)),
        (XL_TE1 + "embeddings.token_embedding.weight", (49408, 768)),
        (XL_TE2 + "transformer.resblocks.0.attn.in_proj_weight", (3840, 1280)),
        ("first_stage_model.encoder.conv_in.weight", (128, 3, 3, 3))]),
    "SDXL refiner": ("SDXL refiner", "checkpoint", [
        (MD + "label_emb.0.0.weight", (1536, 2560)),
        (MD + "input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight", (768, 1280)),
        ("conditioner.embedders.0.model.transformer.resblocks.0.attn.in_proj_weight", (3840, 1280))]),
    "SDXL diffusers UNet": ("SDXL", "unet", [
        ("add_embedding.linear_1.weight", (1280, 2816)),
        ("down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight", (640, 2048))]),
    "SD3 original": ("SD3", "checkpoint", [
        (MD + "joint_blocks.0.x_block.attn.qkv.weight", (4608, 1536)),
        ("text_encoders.clip_g.transformer.text_model.embeddings.token_embedding.weight", (49408, 1280)),
        ("first_stage_model.decoder.conv_in.weight", (512, 16, 3, 3))]),
    "SD3 diffusers transformer": ("SD3", "transformer", [
        ("transformer_blocks.0.attn.add_q_proj.weight", (1536, 1536)), ("context_embedder.weight", (1536, 4096))]),
    "Flux BFL transformer": ("Flux", "transformer", [
        ("double_blocks.0.img_attn.qkv.weight", (9216, 3072)), ("single_blocks.0.linear1.weight", (21504, 3072))]),
    "Flux diffusers transformer": ("Flux", "transformer", [
        ("transformer_blocks.0.attn.add_q_proj.weight", (3072, 3072)),
        ("single_transformer_blocks.0.proj_mlp.weight", (12288, 3072))]),
    "Flux ComfyUI all-in-one": ("Flux", "checkpoint", [
        (MD + "double_blocks.0.img_attn.qkv.weight", (9216, 3072)),
        ("vae.decoder.conv_in.weight", (512, 16, 3, 3)),
        ("text_encoders.clip_l.transformer.text_model.embeddings.token_embedding.weight", (49408, 768)),
        ("text_encoders.t5xxl.transformer." + T5, (4096, 4096))]),
    "SD VAE": ("unknown", "vae", [
        ("encoder.conv_in.weight", (128, 3, 3, 3)), ("decoder.conv_in.weight", (512, 4, 3, 3)),
        ("quant_conv.weight", (8, 8, 1, 1))]),
    "diffusers VAE": ("unknown", "vae", [("encoder.down_blocks.0.resnets.0.conv1.weight", (128, 128, 3, 3)),
                                         ("decoder.up_blocks.0.resnets.0.conv1.weight", (512, 512, 3, 3))]),
    "Flux ae": ("unknown", "vae", [("decoder.conv_in.weight", (512, 16, 3, 3)), ("encoder.conv_out.weight", (32, 512, 3, 3))]),
    "CLIP-L": ("unknown", "clip_l", [("text_model.embeddings.token_embedding.weight", (49408, 768)),
                                     ("text_model.encoder.layers.0.self_attn.q_proj.weight", (768, 768))]),
    "OpenCLIP-bigG (HF)": ("unknown", "clip_g", [("text_model.embeddings.token_embedding.weight", (49408, 1280)),
                                                 ("text_projection.weight", (1280, 1280))]),
    "T5-XXL": ("unknown", "t5xxl", [(T5, (4096, 4096)), ("shared.weight", (32128, 4096))]),
    "CLIP-L + T5": ("unknown", "text_encoders", [
        ("text_encoders.clip_l.transformer.text_model.embeddings.token_embedding.weight", (49408, 768)),
        ("text_encoders.t5xxl.transformer.shared.weight", (32128, 4096))]),
    "kohya SDXL LoRA": ("SDXL", "lora_kohya", [
        ("lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_down.weight", (4, 2048)),
        ("lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_up.weight", (640, 4)),
        ("lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.alpha", ())]),
    "kohya SD 1.x LoRA": ("SD 1.x", "lora_kohya", [
        ("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight", (4, 768))]),
    "kohya SDXL text-encoder-only LoRA": ("SDXL", "lora_kohya", [
        ("lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight", (4, 1280))]),
    "kohya Flux LoRA": ("Flux", "lora_kohya", [("lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight", (16, 3072))]),
    "PEFT SDXL LoRA": ("SDXL", "lora_peft", [
        ("unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.lora_A.weight", (8, 2048))]),
    "old diffusers SD 1.x LoRA": ("SD 1.x", "lora_peft", [
        ("down_blocks.0.attentions.0.transformer_blocks.0.attn2.processor.to_k_lora.down.weight", (4, 768))]),
    "PEFT Flux LoRA": ("Flux", "lora_peft", [
        ("transformer.single_transformer_blocks.0.attn.to_k.lora_A.weight", (16, 3072))]),
    "BFL Flux LoRA": ("Flux", "lora_bfl", [("diffusion_model.double_blocks.0.img_attn.qkv.lora_A.weight", (16, 3072)),
                                           ("diffusion_model.single_blocks.0.linear1.lora_B.weight", (21504, 16))]),
    "xlabs Flux LoRA": ("Flux", "lora_xlabs", [("double_blocks.0.processor.qkv_lora1.down.weight", (16, 3072)),
                                               ("double_blocks.0.processor.proj_lora1.up.weight", (3072, 16))]),
    "LyCORIS": ("SDXL", "lycoris", [
        ("lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.hada_w1_a", (2048, 4)),
        ("lora_te2_text_model_encoder_layers_0_mlp_fc1.hada_w1_b", (4, 1280))]),
    "SD 1.x embedding": ("SD 1.x", "embedding", [("emb_params", (4, 768))]),
    "SD 2.x embedding": ("SD 2.x", "embedding", [("string_to_param.*", (2, 1024))]),
    "SDXL embedding": ("SDXL", "embedding", [("clip_l", (2, 768)), ("clip_g", (2, 1280))]),
    "nothing known": ("unknown", "unknown", [("w", (16,)), ("something.else.weight", (3, 3))]),
}


@pytest.mark.parametrize("case", CASES)
def test_family_and_kind_of_each_layout(case):
    family, kind, tensors = CASES[case]
    arch = detect(tensors)
    assert (arch.family, arch.kind) == (family, kind)
    if kind != "unknown":
        assert arch.evidence and arch.kind_why  # every answer says which keys decided
    else:
        assert arch.label == "" and arch.evidence == ()


def test_every_rule_of_the_table_decides_some_case():
    """A row no layout uses is a row nobody checks: each rule must fire on at least one case above."""
    fired = set()
    for _, _, tensors in CASES.values():
        d = ArchitectureDetector()
        for name, shape in tensors:
            d.observe(name, shape)
        fired |= set(d.seen)
    assert {r.fact for r in RULES} <= fired


def test_evidence_quotes_the_deciding_key_and_shape():
    arch = detect(CASES["SDXL checkpoint"][2])
    assert "label_emb.0.0.weight [1280, 2816]" in arch.family_why and "2816" in arch.family_why
    assert "bundles VAE, CLIP-L, OpenCLIP-bigG" in arch.kind_why
    assert arch.encoders == ("clip_l", "clip_g")
    t5 = detect(CASES["T5-XXL"][2])
    assert t5.kind_label == "text encoder (T5-XXL)" and T5 in t5.kind_why
    both = detect(CASES["CLIP-L + T5"][2])
    assert both.kind_label == "text encoders (CLIP-L + T5-XXL)"


def test_hostile_names_are_cut_and_never_quoted_raw():
    name = "double_blocks.0.img_attn.qkv.weight\x1b[31m" + "x" * 10_000
    d = ArchitectureDetector()
    d.observe(name, (9216, 3072))
    for i in range(1000):  # many distinct shapes: the kept values stay bounded
        d.observe(MD + f"input_blocks.{i}.1.transformer_blocks.0.attn2.to_k.weight", (320, 100 + i))
    arch = d.decide()
    assert arch.family == "Flux"
    assert "\x1b" not in arch.family_why and len(arch.family_why) < 200
    assert len(d.values("context")) <= 16
    d.observe("w", ("not", "a", "shape"))  # a reader never gives this, but a stray one must not raise
    assert d.decide().family == "Flux"


def test_ema_copies_and_schedule_buffers_are_not_evidence():
    arch = detect([("model_ema.diffusion_modelinput_blocks11transformer_blocks0attn2to_kweight", (320, 2048)),
                   ("alphas_cumprod", (1000,)), ("first_stage_model.decoder.conv_in.weight", (512, 4, 3, 3))])
    assert (arch.family, arch.kind) == ("unknown", "vae")


def test_diffusers_folder_kind_with_the_family_its_tensors_show(tmp_path):
    root = write_flux_diffusers(tmp_path / "flux")
    result = analyse_path(root, member_paths=[p.relative_to(root).as_posix() for p in root.rglob("*.safetensors")])
    assert (result.architecture["family"], result.architecture["kind"]) == ("Flux", "diffusers")
    assert result.self_description["type_guess"] == "diffusers" and result.self_description["base_guess"] == "Flux"


def _folder_of(tmp_path, model_index: dict, tensors: dict[str, tuple[int, ...]] | None = None):
    """A diffusers folder with one unet component: `tensors` (names -> shapes), or no weights at all."""
    root = tmp_path / "pipeline"
    (root / "unet").mkdir(parents=True)
    (root / "model_index.json").write_text(json.dumps({**model_index, "unet": ["diffusers", "UNet2DConditionModel"]}))
    (root / "unet" / "config.json").write_text("{}")
    if tensors:
        _write(root / "unet" / "diffusion_pytorch_model.safetensors", _arrays(tensors, 5))
    return root


def _architecture(root):
    return analyse_path(root, member_paths=[p.relative_to(root).as_posix() for p in root.rglob("*.safetensors")]
                        ).architecture


@pytest.mark.parametrize("model_index, family", [
    ({"_class_name": "StableDiffusionXLPipeline"}, "SDXL"),
    ({"_class_name": "StableDiffusionXLImg2ImgPipeline", "requires_aesthetics_score": True}, "SDXL refiner"),
    ({"_class_name": "StableDiffusion3Pipeline"}, "SD3"),
    ({"_class_name": "FluxFillPipeline"}, "Flux"),
    ({"_class_name": "StableDiffusionPipeline"}, "unknown"),  # SD 1.x and 2.x share it: the text encoder decides
])
def test_a_diffusers_folder_whose_tensors_say_nothing_takes_the_family_its_pipeline_class_names(
        tmp_path, model_index, family):
    arch = _architecture(_folder_of(tmp_path, model_index))
    assert (arch["family"], arch["kind"]) == (family, "diffusers")
    if family != "unknown":
        assert f"model_index.json names {model_index['_class_name']}" in arch["family_why"]


def test_a_diffusers_folders_tensors_outrank_its_pipeline_class_and_the_disagreement_is_shown(tmp_path):
    # SD 1.x cross-attention (768 wide) under an SDXL pipeline class: a hand-assembled or mislabelled folder.
    unet = {"down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight": (8, 768)}
    arch = _architecture(_folder_of(tmp_path, {"_class_name": "StableDiffusionXLPipeline"}, unet))
    assert arch["family"] == "SD 1.x"
    assert "but model_index.json names StableDiffusionXLPipeline, a SDXL pipeline" in arch["family_why"]
    agreeing = _architecture(_folder_of(tmp_path / "b", {"_class_name": "StableDiffusionPipeline"}, unet))
    assert agreeing["family"] == "SD 1.x" and "model_index" not in agreeing["family_why"]


def test_a_pipeline_class_is_hostile_text_too(tmp_path):
    arch = _architecture(_folder_of(tmp_path, {"_class_name": "Flux\x1b[31m" + "x" * 5000}))
    assert arch["family"] == "Flux" and len(arch["family_why"]) < 200 and "\x1b" not in arch["family_why"]


def test_a_pickle_checkpoint_gets_the_same_answer_as_its_safetensors_copy(tmp_path):
    # The same names with the first dimension cut to 2: the widths (the evidence) stay.
    state = {name: ("F32", np.zeros((2, *shape[1:]), dtype=np.float32)) for name, shape in CASES["SDXL checkpoint"][2]}
    st = tmp_path / "a.safetensors"
    st.write_bytes(safetensors_bytes(state))
    data_pkl, storages = torch_pickle_bytes(state)
    ckpt = tmp_path / "a.ckpt"
    ckpt.write_bytes(torch_zip_bytes(data_pkl, storages))
    a, b = analyse_path(st).architecture, analyse_path(ckpt).architecture
    assert a["family"] == b["family"] == "SDXL" and a["kind"] == b["kind"] == "checkpoint"


# --- per-family components ---------------------------------------------------------------------

def _arrays(spec: dict[str, tuple[int, ...]], seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(shape, dtype=np.float32) for k, shape in spec.items()}


# One small set of weights per part, under the part's bare names.
FLUX_PARTS = {
    "transformer": {"double_blocks.0.img_attn.qkv.weight": (24, 8), "single_blocks.0.linear1.weight": (56, 8),
                    "img_in.weight": (8, 4)},
    "vae": {"encoder.conv_in.weight": (4, 3, 3, 3), "decoder.conv_in.weight": (8, 16, 3, 3)},
    "clip_l": {"text_model.embeddings.token_embedding.weight": (10, 768),
               "text_model.encoder.layers.0.self_attn.q_proj.weight": (8, 8), "text_projection.weight": (8, 8)},
    "t5xxl": {T5: (8, 8), "encoder.final_layer_norm.weight": (8,), "shared.weight": (10, 8)},
}
COMFY_PREFIX = {"transformer": MD, "vae": "vae.", "clip_l": "text_encoders.clip_l.transformer.",
                "t5xxl": "text_encoders.t5xxl.transformer."}


def _write(path, tensors: dict[str, np.ndarray]):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(safetensors_bytes({k: ("F32", v) for k, v in tensors.items()}))
    return path


def flux_weights(seed=1) -> dict[str, dict[str, np.ndarray]]:
    return {part: _arrays(spec, seed + i) for i, (part, spec) in enumerate(FLUX_PARTS.items())}


def write_flux_diffusers(root, weights=None):
    weights = weights or flux_weights()
    root.mkdir(parents=True)
    (root / "model_index.json").write_text(json.dumps({
        "_class_name": "FluxPipeline", "_diffusers_version": "0.30.0",
        "transformer": ["diffusers", "FluxTransformer2DModel"], "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"], "text_encoder_2": ["transformers", "T5EncoderModel"]}))
    # Names inside a folder stay bare: the subfolder says the slot (T5 sits in text_encoder_2).
    transformer = {"transformer_blocks.0.attn.add_q_proj.weight": weights["transformer"]["img_in.weight"][:, :4],
                   "single_transformer_blocks.0.proj_mlp.weight": weights["transformer"]["single_blocks.0.linear1.weight"]}
    for folder, tensors, file in (("transformer", transformer, "diffusion_pytorch_model"),
                                  ("vae", weights["vae"], "diffusion_pytorch_model"),
                                  ("text_encoder", weights["clip_l"], "model"),
                                  ("text_encoder_2", weights["t5xxl"], "model")):
        (root / folder).mkdir()
        (root / folder / "config.json").write_text("{}")
        _write(root / folder / f"{file}.safetensors", tensors)
    return root


def test_an_sdxl_checkpoint_splits_into_its_four_components(tmp_path):
    spec = {MD + "input_blocks.0.0.weight": (8, 4, 3, 3), "first_stage_model.decoder.conv_in.weight": (8, 4, 3, 3),
            XL_TE1 + "encoder.layers.0.self_attn.q_proj.weight": (8, 8),
            XL_TE2 + "transformer.resblocks.0.attn.in_proj_weight": (24, 8)}
    fp = fingerprint_path(_write(tmp_path / "xl.safetensors", _arrays(spec, 3)))
    assert sorted(fp.components) == ["text_encoder", "text_encoder_2", "unet", "vae"]


def test_a_flux_all_in_one_bundles_the_same_t5_clip_and_vae_as_the_standalone_files_and_the_folder(tmp_path):
    weights = flux_weights()
    aio = {COMFY_PREFIX[part] + k: v for part, tensors in weights.items() for k, v in tensors.items()}
    checkpoint = fingerprint_path(_write(tmp_path / "flux1-dev-fp8-aio.safetensors", aio))
    assert sorted(checkpoint.components) == ["t5xxl", "text_encoder", "transformer", "vae"]

    t5 = fingerprint_path(_write(tmp_path / "t5xxl_fp16.safetensors", weights["t5xxl"]))
    clip = fingerprint_path(_write(tmp_path / "clip_l.safetensors", weights["clip_l"]))
    ae = fingerprint_path(_write(tmp_path / "ae.safetensors", weights["vae"]))
    bare = fingerprint_path(_write(tmp_path / "flux1-dev.safetensors", weights["transformer"]))
    assert list(t5.components) == ["t5xxl"] and shared_components(checkpoint, t5) == ["t5xxl"]
    assert list(clip.components) == ["text_encoder"] and shared_components(checkpoint, clip) == ["text_encoder"]
    assert list(ae.components) == ["vae"] and shared_components(checkpoint, ae) == ["vae"]
    assert shared_components(checkpoint, bare) == ["transformer"]
    # The partial matcher pairs components by name and id (LocalComponent rows): the names agree too.
    for part in (t5, clip, ae, bare):
        [(name, c)] = part.components.items()
        assert checkpoint.components[name].precision_id == c.precision_id

    folder = fingerprint_path(write_flux_diffusers(tmp_path / "FLUX.1-dev", weights))
    assert folder.components["t5xxl"].precision_id == checkpoint.components["t5xxl"].precision_id
    assert folder.components["text_encoder"].precision_id == checkpoint.components["text_encoder"].precision_id
    assert "text_encoder_2" not in folder.components


def test_a_standalone_bigg_encoder_takes_sdxls_second_slot(tmp_path):
    spec = {"text_model.embeddings.token_embedding.weight": (10, 1280), "text_projection.weight": (8, 8)}
    result = analyse_path(_write(tmp_path / "clip_g.safetensors", _arrays(spec, 9)))
    assert result.architecture["kind"] == "clip_g"
    assert list(result.fingerprint["components"]) == ["text_encoder_2"]
    clip_l = analyse_path(_write(tmp_path / "clip_l.safetensors", _arrays(FLUX_PARTS["clip_l"], 9)))
    assert list(clip_l.fingerprint["components"]) == ["text_encoder"]
