import json

import pytest
import torch

from tests.workers.modelfiles.builders import MODEL_INDEX, sd_checkpoint, write_diffusers_folder, write_safetensors
from workers.modelfiles.diffusers import read_diffusers_folder
from workers.modelfiles.types import ModelFileError


@pytest.fixture
def folder(tmp_path):
    return write_diffusers_folder(tmp_path / "sd", sd_checkpoint())


def _names(files):
    return [p.name for p in files]


def test_components_are_library_class_pairs_with_a_folder(folder):
    result = read_diffusers_folder(folder)
    # safety_checker is [null, null], feature_extractor has no folder, "_" keys are not components.
    assert [c.name for c in result.components] == ["scheduler", "text_encoder", "tokenizer", "unet", "vae"]
    assert result.pipeline_class == "StableDiffusionPipeline"
    assert result.root == folder
    unet = result.component("unet")
    assert (unet.library, unet.class_name, unet.folder) == ("diffusers", "UNet2DConditionModel", folder / "unet")
    assert any("feature_extractor" in note for note in result.notes)


def test_weight_files_per_component(folder):
    result = read_diffusers_folder(folder)
    assert _names(result.component("unet").weight_files) == ["diffusion_pytorch_model.safetensors"]
    assert _names(result.component("text_encoder").weight_files) == ["model.safetensors"]
    assert result.component("scheduler").weight_files == ()
    assert result.variants_present == ()


def test_missing_model_index_is_an_error(tmp_path):
    with pytest.raises(ModelFileError, match="model_index.json"):
        read_diffusers_folder(tmp_path)


def test_model_index_must_be_a_json_object(folder):
    (folder / "model_index.json").write_text("[]")
    with pytest.raises(ModelFileError, match="not a JSON object"):
        read_diffusers_folder(folder)
    (folder / "model_index.json").write_text("{broken")
    with pytest.raises(ModelFileError, match="not valid JSON"):
        read_diffusers_folder(folder)


def test_component_names_cannot_leave_the_folder(folder):
    index = dict(MODEL_INDEX, **{"../unet": ["diffusers", "UNet2DConditionModel"]})
    (folder / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ModelFileError, match="outside the folder"):
        read_diffusers_folder(folder)


def test_variants_are_kept_apart_and_default_is_no_variant(tmp_path):
    root = write_diffusers_folder(tmp_path / "sd", sd_checkpoint())
    write_diffusers_folder(root, sd_checkpoint(), variant="fp16")
    default = read_diffusers_folder(root)
    assert default.variants_present == ("fp16",)
    assert _names(default.component("unet").weight_files) == ["diffusion_pytorch_model.safetensors"]
    assert default.component("unet").variant is None
    fp16 = read_diffusers_folder(root, variant="fp16")
    assert _names(fp16.component("unet").weight_files) == ["diffusion_pytorch_model.fp16.safetensors"]
    assert _names(fp16.component("text_encoder").weight_files) == ["model.fp16.safetensors"]
    assert fp16.component("unet").variant == "fp16"


def test_unknown_variant_is_an_error(folder):
    with pytest.raises(ModelFileError, match="not in this folder"):
        read_diffusers_folder(folder, variant="bf16")


def test_component_without_the_variant_falls_back_to_default(folder):
    write_safetensors(folder / "unet" / "diffusion_pytorch_model.non_ema.safetensors", {"x": torch.ones(1)})
    result = read_diffusers_folder(folder, variant="non_ema")
    assert _names(result.component("unet").weight_files) == ["diffusion_pytorch_model.non_ema.safetensors"]
    assert _names(result.component("vae").weight_files) == ["diffusion_pytorch_model.safetensors"]
    assert result.component("vae").variant is None
    assert any("'vae' has no 'non_ema'" in note for note in result.notes)


def test_only_variant_weights_are_used_when_there_is_no_default(tmp_path):
    root = write_diffusers_folder(tmp_path / "sd", sd_checkpoint(), variant="fp16")
    result = read_diffusers_folder(root)
    assert _names(result.component("unet").weight_files) == ["diffusion_pytorch_model.fp16.safetensors"]
    assert result.component("unet").variant == "fp16"


def test_two_variants_and_no_default_select_nothing_without_variant(tmp_path):
    root = write_diffusers_folder(tmp_path / "sd", sd_checkpoint(), variant="fp16")
    write_diffusers_folder(root, sd_checkpoint(), variant="bf16")
    result = read_diffusers_folder(root)
    assert result.component("unet").weight_files == ()
    assert any("pass variant=" in note for note in result.notes)


def test_safetensors_preferred_over_bin(folder):
    (folder / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"not read")
    (folder / "text_encoder" / "pytorch_model.bin").write_bytes(b"not read")
    result = read_diffusers_folder(folder)
    assert _names(result.component("unet").weight_files) == ["diffusion_pytorch_model.safetensors"]
    assert _names(result.component("text_encoder").weight_files) == ["model.safetensors"]


def test_bin_used_when_it_is_all_there_is(folder):
    (folder / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    (folder / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"not read")
    result = read_diffusers_folder(folder)
    assert _names(result.component("unet").weight_files) == ["diffusion_pytorch_model.bin"]


def _shard(folder, names):
    unet = folder / "unet"
    (unet / "diffusion_pytorch_model.safetensors").unlink()
    for name in names:
        write_safetensors(unet / name, {name: torch.ones(1)})
    return unet


def test_sharded_weights_from_index(folder):
    shards = ["diffusion_pytorch_model-00001-of-00002.safetensors", "diffusion_pytorch_model-00002-of-00002.safetensors"]
    unet = _shard(folder, shards)
    (unet / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": 8}, "weight_map": {"a": shards[1], "b": shards[0], "c": shards[1]}}))
    assert _names(read_diffusers_folder(folder).component("unet").weight_files) == shards


def test_variant_sharded_weights_from_variant_index(folder):
    shards = ["diffusion_pytorch_model.fp16-00001-of-00002.safetensors",
              "diffusion_pytorch_model.fp16-00002-of-00002.safetensors"]
    unet = folder / "unet"
    for name in shards:
        write_safetensors(unet / name, {name: torch.ones(1)})
    (unet / "diffusion_pytorch_model.safetensors.index.fp16.json").write_text(json.dumps(
        {"weight_map": {"a": shards[0], "b": shards[1]}}))
    result = read_diffusers_folder(folder, variant="fp16")
    assert _names(result.component("unet").weight_files) == shards
    assert _names(read_diffusers_folder(folder).component("unet").weight_files) == [
        "diffusion_pytorch_model.safetensors"]


def test_shards_without_index_must_be_complete(folder):
    unet = _shard(folder, ["diffusion_pytorch_model-00001-of-00003.safetensors",
                           "diffusion_pytorch_model-00003-of-00003.safetensors"])
    with pytest.raises(ModelFileError, match="incomplete shard set"):
        read_diffusers_folder(folder)
    write_safetensors(unet / "diffusion_pytorch_model-00002-of-00003.safetensors", {"x": torch.ones(1)})
    assert len(read_diffusers_folder(folder).component("unet").weight_files) == 3


@pytest.mark.parametrize("shard", ["../vae/diffusion_pytorch_model.safetensors", "sub/shard.safetensors",
                                   "/etc/passwd", "..", "", "a\\b.safetensors"])
def test_index_shard_names_must_be_plain(folder, shard):
    unet = folder / "unet"
    (unet / "diffusion_pytorch_model.safetensors").unlink()
    (unet / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": shard}}))
    with pytest.raises(ModelFileError, match="plain file name"):
        read_diffusers_folder(folder)


def test_index_naming_a_missing_shard_is_an_error(folder):
    unet = folder / "unet"
    (unet / "diffusion_pytorch_model.safetensors").unlink()
    (unet / "diffusion_pytorch_model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "diffusion_pytorch_model-00001-of-00002.safetensors"}}))
    with pytest.raises(ModelFileError, match="missing shard"):
        read_diffusers_folder(folder)


def test_index_without_weight_map_is_an_error(folder):
    unet = folder / "unet"
    (unet / "diffusion_pytorch_model.safetensors").unlink()
    (unet / "diffusion_pytorch_model.safetensors.index.json").write_text('{"metadata": {}}')
    with pytest.raises(ModelFileError, match="weight_map"):
        read_diffusers_folder(folder)


def test_python_files_are_listed_never_imported(folder, tmp_path):
    marker = tmp_path / "imported"
    code = f"open({str(marker)!r}, 'w').write('ran')\n"
    (folder / "pipeline.py").write_text(code)
    (folder / "unet" / "my_unet.py").write_text(code)
    result = read_diffusers_folder(folder)
    assert sorted(p.name for p in result.code_files) == ["my_unet.py", "pipeline.py"]
    assert any("never imported" in note for note in result.notes)
    assert not marker.exists()
