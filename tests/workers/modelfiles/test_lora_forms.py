"""LoRA identity across layouts: the copies are made by diffusers' own converters (0.42.1)."""
import numpy as np
import pytest
import safetensors.torch
import torch
from diffusers.loaders.lora_conversion_utils import (
    _convert_kohya_flux_lora_to_diffusers,
    _convert_non_diffusers_lora_to_diffusers,
    _convert_xlabs_flux_lora_to_diffusers,
)
from diffusers.utils.state_dict_utils import (
    convert_state_dict_to_diffusers,
    convert_state_dict_to_kohya,
    convert_state_dict_to_peft,
)

from tests.model_builders import LORA_MODULES, LORA_RANK, flux_kohya, peft_lora
from workers.modelfiles.architecture import detect
from workers.modelfiles.fingerprint import fingerprint_path, fingerprint_tensors
from workers.modelfiles.lora_forms import ALPHA_COMPONENT, lora_part, module_key
from workers.modelfiles.types import Tensor

def fp(tmp_path, name, sd):
    path = tmp_path / f"{name}.safetensors"
    safetensors.torch.save_file({k: v.clone().contiguous() for k, v in sd.items()}, str(path))  # converters share A
    return fingerprint_path(path)


def layouts():
    peft = peft_lora()
    kohya = convert_state_dict_to_kohya(dict(peft))  # writes alpha = rank (int64) per module
    diffusers_old = convert_state_dict_to_diffusers(dict(peft))  # .lora.down / .lora_linear_layer.down
    back, alphas = _convert_non_diffusers_lora_to_diffusers(dict(kohya))  # kohya -> attention-processor names
    return {"peft": peft, "kohya": kohya, "diffusers": diffusers_old, "from_kohya": back,
            "peft_again": convert_state_dict_to_peft(dict(back))}, alphas


def test_the_layouts_are_what_the_test_means():
    sds, alphas = layouts()
    assert any(k.endswith(".alpha") for k in sds["kohya"]) and not any(k.endswith(".alpha") for k in sds["peft"])
    assert any(".lora_linear_layer.down." in k for k in sds["diffusers"])
    assert any("_lora.down.weight" in k for k in sds["from_kohya"])
    assert set(alphas.values()) == {LORA_RANK}


def test_every_layout_reads_as_a_lora_and_is_one_lora_component(tmp_path):
    sds, _ = layouts()
    kinds = {name: detect((k, tuple(v.shape)) for k, v in sd.items()).kind for name, sd in sds.items()}
    assert kinds == {"peft": "lora_peft", "kohya": "lora_kohya", "diffusers": "lora_peft", "from_kohya": "lora_peft",
                     "peft_again": "lora_peft"}
    assert all(set(fp(tmp_path, name, sd).components) == {"lora"} for name, sd in sds.items())
    text_encoder_only = {k: v for k, v in sds["diffusers"].items() if k.startswith("text_encoder")}
    assert detect((k, tuple(v.shape)) for k, v in text_encoder_only.items()).kind == "lora_peft"


def test_kohya_peft_and_diffusers_copies_share_content_and_precision_ids(tmp_path):
    sds, _ = layouts()
    fps = {name: fp(tmp_path, name, sd) for name, sd in sds.items()}
    assert len({f.content_id for f in fps.values()}) == 1
    assert len({f.precision_id for f in fps.values()}) == 1
    assert len({f.bf16_id for f in fps.values()}) == 1 and len({f.fp8_id for f in fps.values()}) == 1
    # The kohya copy's alphas equal the rank: the neutral scale, skipped and counted as skipped.
    assert fps["kohya"].ignored_tensors == len(LORA_MODULES) and fps["peft"].ignored_tensors == 0


def test_the_key_mapping_agrees_with_diffusers_kohya_converter():
    sds, _ = layouts()

    def modules(sd):
        return {(lora_part(k).module, lora_part(k).role) for k in sd if lora_part(k).role != "alpha"}

    assert modules(sds["peft"]) == modules(sds["kohya"]) == modules(sds["diffusers"])
    assert module_key("lora_te2_text_model_encoder_layers_1_mlp_fc1") == "text_encoder_2:text.model.encoder.layers.1.mlp.fc1"
    assert lora_part("lora_unet_mid_block_attentions_0_proj_in.alpha").role == "alpha"
    assert lora_part("unet.x.to_k.lora_A.default.weight").role == "down"
    assert lora_part("unet.down_blocks.0.resnets.0.conv1.weight") is None


def test_an_fp16_copy_is_a_precision_variant(tmp_path):
    sds, _ = layouts()
    full = fp(tmp_path, "full", sds["kohya"])
    half = fp(tmp_path, "half", {k: v.half() if v.is_floating_point() else v for k, v in sds["peft"].items()})
    assert half.content_id != full.content_id and half.precision_id == full.precision_id


def test_a_bf16_or_fp8_alpha_equal_to_the_rank_is_neutral_too(tmp_path):
    """BF16 and F8 scalars are carried as their bits: the neutral alpha must be read as a number."""
    sds, _ = layouts()
    bf16 = fp(tmp_path, "bf16", {k: v.bfloat16() if v.is_floating_point() else v.bfloat16()
                                 for k, v in sds["kohya"].items()})
    assert bf16.ignored_tensors == len(LORA_MODULES) and ALPHA_COMPONENT not in bf16.components
    assert bf16.bf16_id == fp(tmp_path, "peft", sds["peft"]).bf16_id
    for dtype in (torch.float8_e4m3fn, torch.float8_e5m2):
        f8 = fp(tmp_path, str(dtype), {k: v.to(dtype) if k.endswith(".alpha") else v for k, v in sds["kohya"].items()})
        assert f8.ignored_tensors == len(LORA_MODULES), dtype


def test_different_seeds_truncated_and_altered_loras_differ(tmp_path):
    sds, _ = layouts()
    base = fp(tmp_path, "base", sds["kohya"])
    other = fp(tmp_path, "other", convert_state_dict_to_kohya(peft_lora(seed=1)))
    truncated = {k: v for k, v in sds["kohya"].items() if "mid_block" not in k}
    altered = dict(sds["peft"])
    key = next(k for k in altered if k.endswith("lora_B.weight"))
    altered[key] = altered[key].clone()
    altered[key][0, 0] += 1e-3
    ids = {base.content_id, other.content_id, fp(tmp_path, "truncated", truncated).content_id,
           fp(tmp_path, "altered", altered).content_id}
    assert len(ids) == 4
    assert other.precision_id != base.precision_id


def test_an_alpha_other_than_the_rank_counts_and_losing_it_shows(tmp_path):
    sds, _ = layouts()
    scaled = {k: (torch.tensor(1.0) if k.endswith(".alpha") else v) for k, v in sds["kohya"].items()}
    with_alpha = fp(tmp_path, "alpha1", scaled)
    # diffusers' kohya loader moves alphas out of the state dict (network_alphas): this copy lost them.
    lost, alphas = _convert_non_diffusers_lora_to_diffusers(dict(scaled))
    assert set(alphas.values()) == {1.0}
    alpha_lost = fp(tmp_path, "lost", lost)
    neutral = fp(tmp_path, "neutral", sds["kohya"])
    assert alpha_lost.content_id == neutral.content_id != with_alpha.content_id
    # Same matrices, alpha lost: the "lora" component is one, only the alphas' component differs.
    assert with_alpha.components["lora"].content_id == alpha_lost.components["lora"].content_id
    assert with_alpha.components[ALPHA_COMPONENT].tensors == len(LORA_MODULES) and ALPHA_COMPONENT not in alpha_lost.components
    # An F16 alpha of the same value is its precision variant; an int64 one (diffusers writes them) the same alpha.
    half_alpha = fp(tmp_path, "alpha1h", {k: (torch.tensor(1.0).half() if k.endswith(".alpha") else v)
                                          for k, v in sds["kohya"].items()})
    assert half_alpha.content_id != with_alpha.content_id and half_alpha.precision_id == with_alpha.precision_id
    int_alpha = fp(tmp_path, "alpha1i", {k: (torch.tensor(1) if k.endswith(".alpha") else v)
                                         for k, v in sds["kohya"].items()})
    assert int_alpha.content_id == with_alpha.content_id


def test_an_alpha_without_a_lora_module_is_an_ordinary_tensor():
    def t(name, array):
        return Tensor(name=name, dtype="F32", shape=tuple(array.shape), array=array)

    one = np.array(1.0, dtype="<f4")
    w = np.arange(6, dtype="<f4").reshape(2, 3)
    a = fingerprint_tensors([t("blocks.0.act.alpha", one), t("blocks.0.linear.weight", w)])
    b = fingerprint_tensors([t("blocks.0.act.alpha", np.array(2.0, dtype="<f4")), t("blocks.0.linear.weight", w)])
    assert a.tensors == 2 and a.ignored_tensors == 0 and a.content_id != b.content_id


def test_kohya_flux_lora_and_its_diffusers_conversion_share_content_id(tmp_path):
    kohya = flux_kohya()
    diffusers = _convert_kohya_flux_lora_to_diffusers(dict(kohya))
    assert "transformer.single_transformer_blocks.0.proj_mlp.lora_B.weight" in diffusers
    a, b = fp(tmp_path, "kohya", kohya), fp(tmp_path, "diffusers", diffusers)
    assert a.content_id == b.content_id and a.precision_id == b.precision_id
    assert fp(tmp_path, "other", flux_kohya(seed=1)).content_id != a.content_id
    # The same matrices under BFL names (diffusion_model.*.lora_A/B) are the same LoRA too.
    bfl = {k.replace("lora_unet_", "diffusion_model.").replace("_blocks_0_", "_blocks.0.").replace("_attn_", "_attn.")
           .replace(".lora_down.", ".lora_A.").replace(".lora_up.", ".lora_B."): v
           for k, v in kohya.items() if not k.endswith(".alpha")}
    assert "diffusion_model.double_blocks.0.img_attn.qkv.lora_A.weight" in bfl
    assert fp(tmp_path, "bfl", bfl).content_id == a.content_id


def test_xlabs_flux_lora_and_its_diffusers_conversion_share_content_id(tmp_path):
    g = torch.Generator().manual_seed(3)
    xlabs = {}
    for name, (i, o) in {"double_blocks.0.processor.qkv_lora1": (3072, 9216),
                         "double_blocks.0.processor.qkv_lora2": (3072, 9216),
                         "double_blocks.0.processor.proj_lora1": (3072, 3072)}.items():
        xlabs[name + ".down.weight"] = torch.randn(2, i, generator=g)
        xlabs[name + ".up.weight"] = torch.randn(o, 2, generator=g)
    diffusers = _convert_xlabs_flux_lora_to_diffusers(dict(xlabs))
    assert "transformer.transformer_blocks.0.attn.add_k_proj.lora_B.weight" in diffusers
    a, b = fp(tmp_path, "xlabs", xlabs), fp(tmp_path, "diffusers", diffusers)
    assert a.content_id == b.content_id and a.tensors == b.tensors == 14


def block_diagonal_flux_kohya(seed=5, rank=12):
    """A fused kohya Flux LoRA whose up matrices are block-diagonal: what merging per-projection
    (to_q / to_k / to_v) LoRAs into the fused layout gives; diffusers' converter then chunks the down."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, dims in {"lora_unet_double_blocks_0_img_attn_qkv": [3072] * 3,
                       "lora_unet_single_blocks_0_linear1": [3072] * 3 + [12288]}.items():
        r = rank // len(dims)
        up, start = torch.zeros(sum(dims), rank), 0
        for j, n in enumerate(dims):
            up[start:start + n, j * r:(j + 1) * r] = torch.randn(n, r, generator=g)
            start += n
        sd[name + ".lora_down.weight"] = torch.randn(rank, 3072, generator=g)
        sd[name + ".lora_up.weight"] = up
        sd[name + ".alpha"] = torch.tensor(float(rank))
    return sd


def test_a_block_diagonal_fused_flux_lora_matches_diffusers_chunked_conversion(tmp_path):
    kohya = block_diagonal_flux_kohya()
    diffusers = _convert_kohya_flux_lora_to_diffusers(dict(kohya))
    assert diffusers["transformer.transformer_blocks.0.attn.to_q.lora_A.weight"].shape == (4, 3072)  # chunked
    a, b = fp(tmp_path, "kohya", kohya), fp(tmp_path, "diffusers", diffusers)
    assert a.content_id == b.content_id and a.tensors == b.tensors == 14
    # The same ranks with a dense up matrix take diffusers' copy branch: matched as well.
    dense = {k: (torch.randn(v.shape, generator=torch.Generator().manual_seed(9)) if k.endswith("lora_up.weight") else v)
             for k, v in kohya.items()}
    converted = _convert_kohya_flux_lora_to_diffusers(dict(dense))
    assert converted["transformer.transformer_blocks.0.attn.to_q.lora_A.weight"].shape == (12, 3072)  # copied
    assert fp(tmp_path, "dense", dense).content_id == fp(tmp_path, "dense_diffusers", converted).content_id


def test_a_fused_projections_halves_pair_in_any_order():
    tensors = [Tensor(name=k, dtype="F32", shape=tuple(v.shape), array=v.numpy())
               for k, v in block_diagonal_flux_kohya(seed=6).items()]
    forward, backward = fingerprint_tensors(tensors), fingerprint_tensors(tensors[::-1])
    assert forward.content_id == backward.content_id and forward.tensors == 14


def _with_alphas(sd, alpha, dtype=None):
    out = {}
    for k, v in sd.items():
        if k.endswith(".alpha"):
            out[k] = torch.tensor(alpha, dtype=dtype or torch.float32)
        else:
            out[k] = v.to(dtype) if dtype is not None else v
    return out


@pytest.mark.parametrize("alpha, dtype", [
    (1.0, None),  # scale 1/2: powers of two, the products are exact
    (3.0, None),  # scale 1.5 on the down matrix: rounded products
    (0.3, None), (0.3, torch.bfloat16), (0.7, torch.float16), (5.0, torch.bfloat16),
])
def test_a_kohya_flux_lora_with_other_alphas_knows_the_id_of_its_folded_diffusers_conversion(tmp_path, alpha, dtype):
    kohya = _with_alphas(flux_kohya(seed=4), alpha, dtype)
    kohya["lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight"] = torch.randn(2, 768).to(
        dtype or torch.float32)
    kohya["lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight"] = torch.randn(768, 2).to(
        dtype or torch.float32)
    kohya["lora_te1_text_model_encoder_layers_0_self_attn_q_proj.alpha"] = torch.tensor(alpha)
    diffusers = _convert_kohya_flux_lora_to_diffusers({k: v.clone() for k, v in kohya.items()})
    a, b = fp(tmp_path, "kohya", kohya), fp(tmp_path, "diffusers", diffusers)
    assert a.content_id != b.content_id  # the conversion holds other values
    assert a.folded_id == b.content_id and not b.folded_id
    assert a.folded_id != fp(tmp_path, "other", _with_alphas(flux_kohya(seed=5), alpha, dtype)).folded_id


def test_a_block_diagonal_kohya_flux_lora_folds_before_it_is_chunked(tmp_path):
    kohya = _with_alphas(block_diagonal_flux_kohya(), 1.0)  # rank 12: scale 1/12
    diffusers = _convert_kohya_flux_lora_to_diffusers({k: v.clone() for k, v in kohya.items()})
    assert fp(tmp_path, "kohya", kohya).folded_id == fp(tmp_path, "diffusers", diffusers).content_id


def test_only_kohya_flux_loras_with_other_alphas_get_a_folded_id(tmp_path):
    assert not fp(tmp_path, "neutral", flux_kohya()).folded_id  # alpha == rank: nothing to fold
    sds, _ = layouts()
    sd_kohya = {k: (torch.tensor(1.0) if k.endswith(".alpha") else v) for k, v in sds["kohya"].items()}
    assert not fp(tmp_path, "sd", sd_kohya).folded_id  # SD kohya: diffusers keeps the alphas (network alphas)
