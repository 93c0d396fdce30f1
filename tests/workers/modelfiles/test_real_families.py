"""The fingerprint links what real converters make of real SDXL, Flux and SD3 models.

The models are built with the diffusers / transformers classes themselves (tiny configs, random init) and
converted with diffusers' own code (tests/workers/modelfiles/real_families.py). Each relation the catalog
draws from the ids is asserted: same content across layouts and containers, precision variants across
fp32 / fp16 / bf16, shared components, and no id in common between models of different seeds.
"""
import pytest

from tests.workers.modelfiles import real_families
from workers.modelfiles.fingerprint import fingerprint_path, shared_components

FAMILIES = {"sdxl": real_families.sdxl, "flux": real_families.flux, "sd3": real_families.sd3}


def fingerprints(family: str, seed: int = 0) -> dict:
    files = FAMILIES[family](seed)
    paths = {"diffusers": files.diffusers, "original": files.original, "fp16": files.fp16, "bf16": files.bf16}
    if files.ckpt is not None:
        paths["ckpt"] = files.ckpt
    return {name: fingerprint_path(path) for name, path in paths.items()}


@pytest.mark.parametrize("family", FAMILIES)
def test_the_original_layout_and_the_diffusers_folder_hold_the_same_weights(family):
    fps = fingerprints(family)
    same = [fps["original"], fps["diffusers"]] + ([fps["ckpt"]] if "ckpt" in fps else [])
    assert len({fp.content_id for fp in same}) == 1
    assert len({fp.tensors for fp in same}) == 1
    assert {fp.dtypes.get("F32", 0) > 0 for fp in same} == {True}


@pytest.mark.parametrize("family", FAMILIES)
def test_fp16_and_bf16_casts_are_precision_variants_of_the_fp32_model(family):
    fps = fingerprints(family)
    fp32, fp16, bf16 = fps["original"], fps["fp16"], fps["bf16"]
    assert fp32.precision_id == fp16.precision_id == fp16.content_id == fps["diffusers"].precision_id
    assert fp32.bf16_id == bf16.bf16_id == bf16.content_id == fps["diffusers"].bf16_id
    assert fp32.content_id not in (fp16.content_id, bf16.content_id)
    assert fp16.precision_id != bf16.precision_id  # bf16 keeps 3 fewer mantissa bits: linked only via fp32


def test_the_sdxl_checkpoint_shares_each_component_with_the_diffusers_folder():
    fps = fingerprints("sdxl")
    folder = fps["diffusers"]
    for layout in ("original", "ckpt", "fp16", "bf16"):
        fp = fps[layout]
        assert set(fp.components) == {"unet", "vae", "text_encoder", "text_encoder_2"}
        if layout != "bf16":  # components match by precision_id: fp16-cast ids
            assert shared_components(fp, folder) == ["text_encoder", "text_encoder_2", "unet", "vae"]
        for name, comp in fp.components.items():
            theirs = folder.components[name]
            assert comp.tensors == theirs.tensors, (layout, name)
            if layout != "bf16":  # a bf16 copy keeps fewer bits than the fp16 cast: linked by bf16_id
                assert comp.precision_id == theirs.precision_id, (layout, name)
            if layout != "fp16":  # fp16 is never cast to bf16 (it holds other bits)
                assert comp.bf16_id == theirs.bf16_id, (layout, name)


@pytest.mark.parametrize("family", FAMILIES)
def test_models_from_different_seeds_share_no_id(family):
    def ids(fps):
        out = set()
        for fp in fps.values():
            out |= {fp.content_id, fp.precision_id, fp.bf16_id}
            out |= {i for c in fp.components.values() for i in (c.content_id, c.precision_id, c.bf16_id)}
        return out

    a, b = fingerprints(family, 0), fingerprints(family, 1)
    assert not ids(a) & ids(b)
    # Not one weight in common either. Small tensors are left out (norm weights start as ones, biases
    # as zeros), and so is SD3's pos_embed: a fixed sin-cos table, the same in every SD3 model.
    digests_a = {d.content for d in a["original"].digests if d.nbytes > 256}
    digests_b = {d.content for d in b["original"].digests if d.nbytes > 256}
    assert len(digests_a & digests_b) == (1 if family == "sd3" else 0)
