"""A PEFT / diffusers LoRA's alphas read from its config: its lora_alpha component equals the kohya file's.

The config is the one diffusers writes: `get_peft_kwargs` (what its kohya loader turns network alphas
into), packed per model with `_pack_dict_with_prefix` under LORA_ADAPTER_METADATA_KEY, as
`save_lora_weights` stores it; or unprefixed in an adapter_config.json beside the file (PEFT's
save_pretrained).
"""
import json
import os

import pytest
import safetensors.torch
import torch
from diffusers.loaders.lora_base import LORA_ADAPTER_METADATA_KEY, _pack_dict_with_prefix
from diffusers.utils.peft_utils import get_peft_kwargs
from diffusers.utils.state_dict_utils import convert_state_dict_to_kohya

from tests.model_builders import LORA_MODULES as MODULES, peft_lora
from workers.modelfiles.fingerprint import fingerprint_path
from workers.modelfiles.lora_alpha_config import parse_alpha_config
from workers.modelfiles.lora_forms import ALPHA_COMPONENT, module_key

MODELS = {"unet": "unet.", "text_encoder": "text_encoder.", "text_encoder_2": "text_encoder_2."}
ODD = "unet.mid_block.attentions.0.proj_in"  # the module whose alpha differs from the others'


def alpha_of(module: str) -> float:
    return 2.0 if module == ODD else 1.0


def kohya_with_alphas(peft):
    kohya = convert_state_dict_to_kohya(dict(peft))
    for key in kohya:
        if key.endswith(".alpha"):
            peft_module = next(m for m in MODULES if module_key(m) == _module_of(key))
            kohya[key] = torch.tensor(alpha_of(peft_module))
    return kohya


def _module_of(kohya_alpha_key: str) -> str:
    return module_key(kohya_alpha_key.removesuffix(".alpha"))


def model_configs(peft) -> dict[str, dict]:
    """Per model, the LoraConfig kwargs diffusers' loader builds from the kohya file's network alphas."""
    configs = {}
    for model, prefix in MODELS.items():
        mine = {k[len(prefix):]: v for k, v in peft.items() if k.startswith(prefix)}
        if not mine:
            continue
        ranks = {k: v.shape[1] for k, v in mine.items() if "lora_B" in k}
        alphas = {m[len(prefix):] + ".alpha": alpha_of(m) for m in MODULES if m.startswith(prefix)}
        kwargs = get_peft_kwargs(ranks, alphas, mine, is_unet=model == "unet")
        configs[model] = json.loads(json.dumps(kwargs, default=list))
    return configs


def save(path, sd, metadata=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_file({k: v.clone().contiguous() for k, v in sd.items()}, str(path), metadata=metadata)
    return path


def packed(configs) -> dict[str, str]:
    flat = {}
    for model, config in configs.items():
        flat.update(_pack_dict_with_prefix(config, model))
    return {"format": "pt", LORA_ADAPTER_METADATA_KEY: json.dumps(flat, indent=2, sort_keys=True)}


def test_the_config_is_what_the_test_means():
    configs = model_configs(peft_lora())
    assert configs["unet"]["lora_alpha"] == 1.0 and configs["unet"]["alpha_pattern"] == {
        "mid_block.attentions.0.proj_in": 2.0}
    assert configs["text_encoder"]["lora_alpha"] == 1.0 and not configs["text_encoder"]["alpha_pattern"]


def test_a_peft_file_with_its_alphas_in_metadata_is_the_kohya_file_it_came_from(tmp_path):
    peft = peft_lora()
    kohya = fingerprint_path(save(tmp_path / "kohya.safetensors", kohya_with_alphas(peft)))
    with_config = fingerprint_path(save(tmp_path / "peft.safetensors", peft, packed(model_configs(peft))))
    bare = fingerprint_path(save(tmp_path / "bare.safetensors", peft))
    assert kohya.components[ALPHA_COMPONENT].tensors == len(MODULES)
    assert with_config.content_id == kohya.content_id and with_config.precision_id == kohya.precision_id
    assert with_config.components[ALPHA_COMPONENT].content_id == kohya.components[ALPHA_COMPONENT].content_id
    # Without its config the same file is "same matrices, alpha lost".
    assert bare.content_id != kohya.content_id and ALPHA_COMPONENT not in bare.components
    assert bare.components["lora"].content_id == kohya.components["lora"].content_id


def test_an_adapter_config_beside_the_file_counts_too_and_a_symlinked_one_does_not(tmp_path):
    peft = {k: v for k, v in peft_lora().items() if k.startswith("unet.")}
    kohya = fingerprint_path(save(tmp_path / "kohya.safetensors", kohya_with_alphas(peft)))
    folder = tmp_path / "adapter"
    adapter = save(folder / "adapter_model.safetensors", peft)
    (folder / "adapter_config.json").write_text(json.dumps({**model_configs(peft)["unet"], "peft_type": "LORA"}))
    assert fingerprint_path(adapter).content_id == kohya.content_id

    linked = tmp_path / "linked"
    save(linked / "adapter_model.safetensors", peft)
    os.symlink(folder / "adapter_config.json", linked / "adapter_config.json")
    assert ALPHA_COMPONENT not in fingerprint_path(linked / "adapter_model.safetensors").components


@pytest.mark.parametrize("change", [
    {"use_rslora": True},  # scale alpha / sqrt(r): no kohya alpha says that
    {"alpha_pattern": {"mid_block.*proj_in": 2.0}},  # a regex: PEFT would run it, we do not
    {"lora_alpha": "8"}, {"lora_alpha": True}, {"lora_alpha": -1}, {"lora_alpha": float("nan")},
])
def test_a_config_we_cannot_apply_leaves_the_alphas_unknown(tmp_path, change):
    peft = {k: v for k, v in peft_lora().items() if k.startswith("unet.")}
    config = {**model_configs(peft)["unet"], **change}
    fp = fingerprint_path(save(tmp_path / "a.safetensors", peft,
                               {LORA_ADAPTER_METADATA_KEY: json.dumps(config, allow_nan=True)}))
    assert ALPHA_COMPONENT not in fp.components
    assert fp.content_id == fingerprint_path(save(tmp_path / "b.safetensors", peft)).content_id


@pytest.mark.parametrize("raw", ["not json", "[1, 2]", '{"unet.lora_alpha": {}}', "{" * 5000, ""])
def test_a_broken_config_is_ignored_not_fatal(tmp_path, raw):
    peft = {k: v for k, v in peft_lora().items() if k.startswith("unet.")}
    fp = fingerprint_path(save(tmp_path / "a.safetensors", peft, {LORA_ADAPTER_METADATA_KEY: raw}))
    assert ALPHA_COMPONENT not in fp.components


def test_a_file_that_is_no_lora_never_reads_a_config(tmp_path, monkeypatch):
    import workers.modelfiles.lora_alpha_config as config

    monkeypatch.setattr(config, "from_adapter_config", lambda path: pytest.fail("read a config for a non-LoRA"))
    monkeypatch.setattr(config, "from_metadata", lambda metadata: pytest.fail("read a config for a non-LoRA"))
    fingerprint_path(save(tmp_path / "m.safetensors", {"model.layer.weight": torch.ones(4, 4)}))


def test_patterns_match_whole_module_names_from_their_end():
    config = parse_alpha_config({"lora_alpha": 4, "alpha_pattern": {"attn1.to_k": 2, "proj_in": 8}}, source="t")
    assert config.alpha_for(module_key("unet.down_blocks.0.attn1.to_k")) == 2.0
    assert config.alpha_for(module_key("unet.mid_block.proj_in")) == 8.0
    assert config.alpha_for(module_key("unet.mid_block.xproj_in")) == 4.0  # not at a name boundary
    prefixed = parse_alpha_config({"transformer.lora_alpha": 4, "text_encoder.lora_alpha": 2}, source="t")
    assert prefixed.alpha_for(module_key("transformer.blocks.0.to_q")) == 4.0
    assert prefixed.alpha_for(module_key("text_encoder.layers.0.q_proj")) == 2.0
    assert prefixed.alpha_for(module_key("text_encoder_2.layers.0.q_proj")) is None
