"""What a file says about itself: header metadata read with caps, type and base guessed from tensor names."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tests.fakes.demo_library import safetensors_bytes, torch_pickle_bytes, torch_zip_bytes
from workers.modelfiles.analyse import analyse_path, describe_path
from workers.modelfiles.self_description import (
    MAX_TOTAL_CHARS,
    MAX_VALUE_CHARS,
    TensorEvidence,
    describe,
)


def _evidence(names_shapes) -> TensorEvidence:
    ev = TensorEvidence()
    for name, shape in names_shapes:
        ev.observe(name, tuple(shape))
    return ev


def _state(names_shapes):
    return {name: ("F32", np.zeros(shape, dtype=np.float32)) for name, shape in names_shapes}


KOHYA_SDXL_LORA = [
    ("lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_down.weight", (4, 2048)),
    ("lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_up.weight", (640, 4)),
    ("lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.alpha", ()),
    ("lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight", (4, 1280)),
]
KOHYA_METADATA = {
    "ss_output_name": "my_style_v3", "ss_base_model_version": "sdxl_base_v1-0",
    "ss_sd_model_name": "sd_xl_base_1.0.safetensors", "ss_network_module": "networks.lora",
    "ss_network_dim": "16", "ss_network_alpha": "8.0", "ss_resolution": "(1024, 1024)",
    "ss_num_epochs": "10", "ss_epoch": "10", "ss_training_started_at": "1714000000.5",
    "ss_tag_frequency": json.dumps({"10_mystyle": {"mystyle": 40, "1girl": 12, "outdoors": 3},
                                    "5_extra": {"1girl": 30, "night": 1}}),
}

FAMILIES = {
    "SD 1.x": [("model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight", (320, 768)),
               ("cond_stage_model.transformer.text_model.embeddings.token_embedding.weight", (49408, 768)),
               ("first_stage_model.decoder.conv_in.weight", (512, 4, 3, 3))],
    "SD 2.x": [("model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight", (320, 1024)),
               ("cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight", (3072, 1024))],
    "SDXL": [("model.diffusion_model.label_emb.0.0.weight", (1280, 2816)),
             ("conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight", (3840, 1280)),
             ("model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight", (640, 2048))],
    "SD3": [("model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight", (4608, 1536))],
    "Flux": [("double_blocks.0.img_attn.qkv.weight", (9216, 3072)), ("single_blocks.0.linear1.weight", (21504, 3072))],
}


@pytest.mark.parametrize("family", FAMILIES)
def test_base_model_is_guessed_from_tensor_names_of_each_family(family):
    d = describe(metadata=None, evidence=_evidence(FAMILIES[family]))
    assert d.base_guess == family
    assert d.type_guess == "checkpoint"
    assert d.evidence  # a guess always says why


def test_kohya_sdxl_lora_reads_its_metadata_and_tensors():
    d = describe(metadata=KOHYA_METADATA, evidence=_evidence(KOHYA_SDXL_LORA))
    assert (d.type_guess, d.base_guess) == ("LoRA", "SDXL")
    assert d.title == d.output_name == "my_style_v3"
    assert (d.network_dim, d.network_alpha, d.network_module) == ("16", "8.0", "networks.lora")
    assert (d.resolution, d.num_epochs, d.epoch) == ("(1024, 1024)", "10", "10")
    assert d.top_tags[:2] == [["1girl", 42], ["mystyle", 40]]  # summed over the dataset folders
    assert d.label == "LoRA for SDXL: my_style_v3"
    assert "mystyle" in d.search_words
    assert any("lora_down" in e for e in d.evidence)


def test_modelspec_title_architecture_author_and_date():
    meta = {"modelspec.title": "Ink Wash", "modelspec.architecture": "stable-diffusion-v1/lora",
            "modelspec.author": "someone", "modelspec.date": "2024-05-01", "modelspec.description": "x" * 5000}
    d = describe(metadata=meta, evidence=None)
    assert (d.type_guess, d.base_guess) == ("LoRA", "SD 1.x")  # from metadata alone
    assert (d.title, d.author, d.date) == ("Ink Wash", "someone", "2024-05-01")
    assert len(d.description) == 1000 and any("modelspec.description" in c for c in d.capped)


def test_other_file_types_from_tensor_names():
    assert describe(metadata=None, evidence=_evidence([("emb_params", (4, 768))])).type_guess == "embedding"
    assert describe(metadata=None, evidence=_evidence([("emb_params", (4, 768))])).base_guess == "SD 1.x"
    sdxl_emb = describe(metadata=None, evidence=_evidence([("clip_l", (2, 768)), ("clip_g", (2, 1280))]))
    assert (sdxl_emb.type_guess, sdxl_emb.base_guess) == ("embedding", "SDXL")
    vae = describe(metadata=None, evidence=_evidence([("encoder.conv_in.weight", (128, 3, 3, 3)),
                                                      ("decoder.conv_out.weight", (3, 128, 3, 3)),
                                                      ("quant_conv.weight", (8, 8, 1, 1))]))
    assert vae.type_guess == "VAE"
    lycoris = describe(metadata=None, evidence=_evidence([("lora_unet_x.hada_w1_a", (4, 320))]))
    assert lycoris.type_guess == "LyCORIS"
    peft = describe(metadata=None, evidence=_evidence([("transformer.single_transformer_blocks.0.attn.to_k.lora_A.weight",
                                                        (16, 3072))]))
    assert (peft.type_guess, peft.base_guess) == ("LoRA", "Flux")
    assert describe(metadata=None, evidence=None, fmt="diffusers").type_guess == "diffusers"
    nothing = describe(metadata=None, evidence=None)
    assert (nothing.type_guess, nothing.base_guess, nothing.label) == ("unknown", "unknown", "")


def test_huge_and_hostile_metadata_is_capped():
    nested = "[" * 100_000 + "]" * 100_000
    meta = {"ss_output_name": "n" * 100_000, "modelspec.title": 12,  # a non-string is ignored
            "ss_tag_frequency": nested}
    d = describe(metadata=meta, evidence=None)
    assert len(d.output_name) == MAX_VALUE_CHARS
    assert d.title == d.output_name  # the non-string title fell back to the output name
    assert d.top_tags == [] and any("ss_tag_frequency" in c for c in d.capped)
    many_tags = json.dumps({"d": {f"tag{i}" + "x" * 300: i for i in range(5000)}})
    d = describe(metadata={"ss_tag_frequency": many_tags}, evidence=None)
    assert len(d.top_tags) == 20 and all(len(t) <= 80 for t, _ in d.top_tags)
    assert len(json.dumps(d.to_json())) <= MAX_TOTAL_CHARS
    huge = json.dumps({"d": {"a": 1}}) + " " * (3 << 20)
    d = describe(metadata={"ss_tag_frequency": huge}, evidence=None)
    assert d.top_tags == [] and "not read" in d.capped[0]


def test_a_safetensors_lora_file_is_described_by_analysis(tmp_path):
    path = tmp_path / "whatever.bin"  # the name says nothing: content decides
    path.write_bytes(safetensors_bytes(_state(KOHYA_SDXL_LORA), metadata=KOHYA_METADATA))
    result = analyse_path(path)
    assert result.self_description["label"] == "LoRA for SDXL: my_style_v3"
    assert result.self_description["top_tags"][0] == ["1girl", 42]
    assert describe_path(path)["label"] == "LoRA for SDXL: my_style_v3"


def test_a_pickle_checkpoint_is_described_without_executing_it(tmp_path, monkeypatch):
    import pickle

    def refuse(*a, **k):
        raise AssertionError("the standard unpickler must never run")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    data_pkl, storages = torch_pickle_bytes(_state(FAMILIES["SD 2.x"]))
    path = tmp_path / "model.ckpt"
    path.write_bytes(torch_zip_bytes(data_pkl, storages))
    result = analyse_path(path)
    assert result.verdict == "safe"
    assert (result.self_description["type_guess"], result.self_description["base_guess"]) == ("checkpoint", "SD 2.x")
    assert describe_path(path)["base_guess"] == "SD 2.x"
