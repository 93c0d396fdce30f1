import gc
import json
import random
import weakref

import blake3
import numpy as np
import pytest
import torch

from tests.workers.modelfiles.builders import (
    SCHEDULE_KEYS,
    cast,
    component_bytes,
    fine_tune,
    sd_checkpoint,
    sd_weights,
    tensor_bytes,
    write_diffusers_folder,
    write_safetensors,
)
from workers.modelfiles.fingerprint import (
    Fingerprint,
    FingerprintError,
    component_for_key,
    fingerprint_path,
    fingerprint_tensors,
    is_ignored_key,
    shared_components,
    similarity,
)
from workers.modelfiles.safetensors_reader import iter_safetensors_tensors
from workers.modelfiles.types import ModelFileError, Tensor



def _expected_digest(value: torch.Tensor) -> str:
    """The documented per-tensor digest, computed from torch's own bytes."""
    dtype, shape, raw = tensor_bytes(value)
    squeezed = ",".join(str(d) for d in shape if d != 1)
    return blake3.blake3(f"modelxref/tensor/v1\n{dtype}[{squeezed}]\n".encode() + raw).hexdigest(length=16)


@pytest.fixture
def read_back(tmp_path):
    """Write tensors with our writer and read them with the reader under test."""
    counter = iter(range(10**6))

    def read(tensors: dict[str, torch.Tensor]):
        path = write_safetensors(tmp_path / f"t{next(counter)}.safetensors", tensors)
        return list(iter_safetensors_tensors(path))

    return read


def _fp(tmp_path, state, name="m.safetensors"):
    return fingerprint_path(write_safetensors(tmp_path / name, state))


# --- per-tensor digests -----------------------------------------------------------

def test_content_digest_is_dtype_squeezed_shape_and_bytes(read_back):
    value = torch.randn(8, 8, 1, 1)
    fp = fingerprint_tensors(read_back({"w": value}))
    assert fp.digests[0].content == _expected_digest(value)
    assert fp.digests[0].content == _expected_digest(value[:, :, 0, 0])


def test_precision_digest_matches_torch_fp16_cast_on_edge_values(read_back):
    edge = torch.tensor([
        1.0 + 2**-11, 1.0 + 3 * 2**-11,  # exact ties: round to even
        65504.0, 65520.0, 1e6, -1e6,  # max half, first value that rounds to inf, overflow
        2**-24, 2**-25, 2**-25 * 1.5, 1e-10, -0.0, float("inf"), float("-inf"),
    ])
    value = torch.cat([edge, torch.randn(5000) * 10, torch.randn(5000) * 1e-5])
    fp = fingerprint_tensors(read_back({"w": value}))
    assert fp.digests[0].precision == _expected_digest(value.half())
    assert fp.digests[0].content == _expected_digest(value)


def test_precision_digest_matches_torch_on_random_bit_patterns(read_back):
    bits = np.random.default_rng(7).integers(0, 2**32, 600_000, dtype=np.uint64).astype(np.uint32)
    value = torch.from_numpy(bits.view(np.float32).copy())
    value = value[~torch.isnan(value)]  # NaN payloads: see the next test
    (d,) = fingerprint_tensors(read_back({"w": value})).digests
    assert d.precision == _expected_digest(value.half())


def test_nan_payloads_do_not_split_precision_digests():
    quiet = np.array([0x7FC00000, 0x3F800000], dtype=np.uint32).view(np.float32)
    payload = np.array([0x7FC12345, 0x3F800000], dtype=np.uint32).view(np.float32)
    a = fingerprint_tensors([Tensor("a", "F32", (2,), quiet)]).digests[0]
    b = fingerprint_tensors([Tensor("a", "F32", (2,), payload)]).digests[0]
    assert a.content != b.content and a.precision == b.precision


def test_precision_digest_of_f64_rounds_like_torch(read_back):
    value = torch.randn(100_000, dtype=torch.float64)
    assert not torch.equal(value.half().double(), torch.from_numpy(value.numpy().astype(np.float16)).double())
    f64, f32 = fingerprint_tensors(read_back({"w": value})), fingerprint_tensors(read_back({"w": value.float()}))
    assert f64.digests[0].precision == _expected_digest(value.half()) == f32.digests[0].precision


def test_precision_digest_of_bf16_widens_then_casts(read_back):
    value = torch.cat([torch.randn(3000), torch.tensor([1e30, 1e-30])]).bfloat16()
    fp = fingerprint_tensors(read_back({"w": value}))
    assert fp.digests[0].precision == _expected_digest(value.half())
    assert fp.digests[0].content == _expected_digest(value)


def test_f16_and_integer_precision_digest_is_the_content_digest(read_back):
    fp = fingerprint_tensors(read_back({"h": torch.randn(10).half(), "i": torch.arange(5)}))
    for d in fp.digests:
        assert d.precision == d.content


def test_f8_is_left_as_is(read_back):
    value = torch.randn(100).to(torch.float8_e4m3fn)
    (d,) = fingerprint_tensors(read_back({"w": value})).digests
    assert d.precision == d.content == _expected_digest(value)


def test_large_tensors_hashed_on_the_worker_thread_give_the_same_digest(read_back):
    value = torch.randn(3, 1024, 1024)  # 12 MB: above the threading threshold, several cast chunks
    (d,) = fingerprint_tensors(read_back({"w": value})).digests
    assert (d.content, d.precision) == (_expected_digest(value), _expected_digest(value.half()))


def test_big_endian_and_strided_arrays_hash_like_their_little_endian_copy():
    base = np.arange(24, dtype="<f4").reshape(4, 6)
    reference = fingerprint_tensors([Tensor("a", "F32", (4, 6), base)])
    big = fingerprint_tensors([Tensor("a", "F32", (4, 6), base.astype(">f4"))])
    strided = fingerprint_tensors([Tensor("a", "F32", (4, 6), np.asfortranarray(base))])
    assert reference.content_id == big.content_id == strided.content_id


def test_array_not_carrying_the_dtype_is_rejected():
    with pytest.raises(FingerprintError):
        fingerprint_tensors([Tensor("a", "F32", (2,), np.zeros(2, np.float64))])
    with pytest.raises(FingerprintError):
        fingerprint_tensors([Tensor("a", "F32", (3,), np.zeros(2, np.float32))])


def test_streaming_keeps_one_tensor_alive_at_a_time():
    alive = []

    def stream():
        for i in range(5):
            array = np.full(1000, i, dtype=np.float32)
            alive.append(weakref.ref(array))
            yield Tensor(f"t{i}", "F32", (1000,), array)
            del array
            gc.collect()
            assert sum(ref() is not None for ref in alive) <= 1

    assert fingerprint_tensors(stream()).tensors == 5


# --- identity across renames, formats and precisions ------------------------------------

def test_names_and_order_do_not_matter(tmp_path):
    state = sd_weights()
    keys = list(state)
    random.Random(0).shuffle(keys)
    renamed = {f"renamed.{i}": state[k] for i, k in enumerate(keys)}
    a, b = _fp(tmp_path, state, "a.safetensors"), _fp(tmp_path, renamed, "b.safetensors")
    assert a.content_id == b.content_id and a.precision_id == b.precision_id
    assert set(a.components) == {"unet", "vae", "text_encoder"} and set(b.components) == {"other"}


def test_different_weights_differ(tmp_path):
    assert _fp(tmp_path, sd_weights(0), "a.safetensors").content_id != _fp(tmp_path, sd_weights(1), "b.safetensors").content_id


def test_training_extras_are_ignored(tmp_path):
    full = _fp(tmp_path, sd_checkpoint(), "full.safetensors")
    pruned = _fp(tmp_path, sd_weights(), "pruned.safetensors")
    assert full.content_id == pruned.content_id
    extras = set(sd_checkpoint()) - set(sd_weights())
    assert full.ignored_tensors == len(extras) and pruned.ignored_tensors == 0
    assert full.tensors == pruned.tensors == len(sd_weights())


def test_single_file_and_diffusers_folder_share_content_id(tmp_path):
    state = sd_checkpoint()
    single = _fp(tmp_path, state)
    folder = fingerprint_path(write_diffusers_folder(tmp_path / "diffusers", state))
    assert folder.content_id == single.content_id
    assert folder.precision_id == single.precision_id
    for name in ("unet", "vae", "text_encoder"):
        assert folder.components[name] == single.components[name]
    assert shared_components(single, folder) == ["text_encoder", "unet", "vae"]
    assert similarity(single, folder) == 1.0


def test_safety_checker_in_a_folder_does_not_change_the_identity(tmp_path):
    from tests.workers.modelfiles.builders import MODEL_INDEX

    state = sd_checkpoint()
    index = dict(MODEL_INDEX, safety_checker=["stable_diffusion", "StableDiffusionSafetyChecker"])
    root = write_diffusers_folder(tmp_path / "d", state, model_index=index)
    (root / "safety_checker").mkdir()
    write_safetensors(root / "safety_checker" / "model.safetensors", {"w": torch.randn(10)})
    assert fingerprint_path(root).content_id == _fp(tmp_path, state).content_id


def test_sharded_folder_matches_single_file(tmp_path):
    state = sd_checkpoint()
    root = write_diffusers_folder(tmp_path / "d", state)
    unet = root / "unet"
    whole = {t.name: torch.from_numpy(t.array.copy())
             for t in iter_safetensors_tensors(unet / "diffusion_pytorch_model.safetensors")}
    (unet / "diffusion_pytorch_model.safetensors").unlink()
    names = sorted(whole)
    shards = {"diffusion_pytorch_model-00001-of-00002.safetensors": names[::2],
              "diffusion_pytorch_model-00002-of-00002.safetensors": names[1::2]}
    for shard, keys in shards.items():
        write_safetensors(unet / shard, {k: whole[k] for k in keys})
    (unet / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {k: shard for shard, keys in shards.items() for k in keys}}))
    assert fingerprint_path(root).content_id == _fp(tmp_path, state).content_id


def test_fp16_copy_shares_precision_id_not_content_id(tmp_path):
    state = sd_checkpoint()
    fp32 = _fp(tmp_path, state, "fp32.safetensors")
    fp16 = _fp(tmp_path, cast(state, torch.float16), "fp16.safetensors")
    assert fp16.precision_id == fp32.precision_id
    assert fp16.content_id != fp32.content_id
    assert fp16.dtypes == {"F16": fp32.dtypes["F32"]} and fp32.dtypes == {"F32": fp32.tensors}
    assert similarity(fp32, fp16) == 1.0
    folder16 = fingerprint_path(write_diffusers_folder(tmp_path / "d16", cast(state, torch.float16)))
    assert folder16.precision_id == fp32.precision_id


def test_folder_variant_selects_the_fp16_files(tmp_path):
    state = sd_checkpoint()
    root = write_diffusers_folder(tmp_path / "d", state)
    write_diffusers_folder(root, cast(state, torch.float16), variant="fp16")
    default, fp16 = fingerprint_path(root), fingerprint_path(root, variant="fp16")
    assert default.dtypes == {"F32": default.tensors} and fp16.dtypes == {"F16": fp16.tensors}
    assert default.precision_id == fp16.precision_id and default.content_id != fp16.content_id


def test_unaligned_tensor_data_hashes_like_aligned(tmp_path):
    from tests.workers.modelfiles.builders import raw_safetensors

    value = torch.randn(1000)
    _dtype, _shape, raw = tensor_bytes(value)
    header = '{"w":{"dtype":"F32","shape":[1000],"data_offsets":[0,4000]}} '
    assert (8 + len(header)) % 4  # data starts off a 4-byte boundary
    unaligned = tmp_path / "u.safetensors"
    unaligned.write_bytes(raw_safetensors(header, raw, pad=False))
    assert fingerprint_path(unaligned).digests == _fp(tmp_path, {"w": value}).digests
    assert fingerprint_path(unaligned).digests[0].precision == _expected_digest(value.half())


def test_bf16_links_to_its_fp16_copy_but_not_to_fp32(tmp_path):
    state = sd_weights()
    bf16 = _fp(tmp_path, cast(state, torch.bfloat16), "bf16.safetensors")
    bf16_as_fp16 = _fp(tmp_path, cast(cast(state, torch.bfloat16), torch.float16), "bf16_fp16.safetensors")
    fp32 = _fp(tmp_path, state, "fp32.safetensors")
    assert bf16.precision_id == bf16_as_fp16.precision_id
    assert bf16.precision_id != fp32.precision_id  # documented: bf16 drops mantissa bits fp16 keeps


def test_fine_tune_shares_vae_and_text_encoder(tmp_path):
    base_state = sd_checkpoint()
    tuned_state = fine_tune(base_state)
    base = _fp(tmp_path, base_state, "base.safetensors")
    tuned = _fp(tmp_path, tuned_state, "tuned.safetensors")
    sizes = component_bytes(base_state)
    expected = (sizes["vae"] + sizes["text_encoder"]) / sum(sizes.values())
    assert 0.05 < expected < 0.5
    assert similarity(base, tuned) == pytest.approx(expected)
    assert similarity(tuned, base) == pytest.approx(expected)
    assert shared_components(base, tuned) == ["text_encoder", "vae"]
    tuned16 = fingerprint_path(write_diffusers_folder(tmp_path / "tuned16", cast(tuned_state, torch.float16)))
    assert similarity(base, tuned16) == pytest.approx(expected)
    assert shared_components(tuned16, base) == ["text_encoder", "vae"]


def test_standalone_vae_matches_the_checkpoints_vae(tmp_path):
    state = sd_weights()
    vae_only = {k.removeprefix("first_stage_model."): v for k, v in state.items() if k.startswith("first_stage_model.")}
    vae = _fp(tmp_path, vae_only, "vae.safetensors")
    full = _fp(tmp_path, state, "full.safetensors")
    assert set(vae.components) == {"vae"}
    assert shared_components(vae, full) == ["vae"]
    assert similarity(vae, full) == pytest.approx(component_bytes(state)["vae"] / sum(component_bytes(state).values()))


def test_unrelated_models_score_zero(tmp_path):
    assert similarity(_fp(tmp_path, sd_weights(0), "a.safetensors"), _fp(tmp_path, sd_weights(5), "b.safetensors")) < 0.01


@pytest.mark.parametrize("zipfile", [True, False], ids=["zip", "legacy"])
def test_torch_checkpoint_shares_content_id(tmp_path, zipfile):
    state = sd_checkpoint()
    path = tmp_path / "model.ckpt"
    optimizer = {"state": {0: {"exp_avg": torch.randn(4), "step": torch.tensor(3.0)}}, "param_groups": []}
    torch.save({"state_dict": state, "global_step": 10, "optimizer_states": [optimizer]}, path,
               _use_new_zipfile_serialization=zipfile)
    assert fingerprint_path(path).content_id == _fp(tmp_path, state).content_id


def test_diffusers_folder_with_bin_weights(tmp_path):
    state = sd_checkpoint()
    root = write_diffusers_folder(tmp_path / "d", state)
    te = root / "text_encoder"
    tensors = {t.name: torch.from_numpy(t.array.copy()) for t in iter_safetensors_tensors(te / "model.safetensors")}
    (te / "model.safetensors").unlink()
    torch.save(tensors, te / "pytorch_model.bin")
    assert fingerprint_path(root).content_id == _fp(tmp_path, state).content_id


# --- rules by name ------------------------------------------------------------------------

@pytest.mark.parametrize("key,component", [
    ("model.diffusion_model.input_blocks.0.0.weight", "unet"),
    ("first_stage_model.decoder.up.0.block.0.conv1.weight", "vae"),
    ("cond_stage_model.transformer.text_model.final_layer_norm.weight", "text_encoder"),
    ("cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight", "text_encoder"),
    ("conditioner.embedders.0.transformer.text_model.final_layer_norm.weight", "text_encoder"),
    ("conditioner.embedders.1.model.ln_final.weight", "text_encoder_2"),
    ("conditioner.embedders.0.model.ln_final.weight", "text_encoder_2"),  # SDXL refiner
    ("model.diffusion_model.double_blocks.0.img_attn.qkv.weight", "transformer"),
    ("double_blocks.0.img_attn.qkv.weight", "transformer"),
    ("single_blocks.3.linear1.weight", "transformer"),
    ("vae.decoder.conv_in.weight", "vae"),
    ("text_encoders.clip_l.transformer.text_model.final_layer_norm.weight", "text_encoder"),
    ("text_encoders.t5xxl.transformer.encoder.block.0.layer.0.SelfAttention.q.weight", "t5xxl"),
    ("encoder.block.0.layer.0.SelfAttention.q.weight", "t5xxl"),
    ("decoder.up_blocks.0.resnets.0.conv1.weight", "vae"),
    ("down_blocks.0.resnets.0.conv1.weight", "unet"),
    ("text_model.encoder.layers.0.mlp.fc1.weight", "text_encoder"),
    ("lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight", "lora"),
    ("lora_te1_text_model_encoder_layers_0_mlp_fc1.alpha", "lora"),
    ("unet.down_blocks.0.attentions.0.proj_in.lora_A.weight", "lora"),
    ("state_dict.model.diffusion_model.out.2.weight", "unet"),
    ("something_else", "other"),
])
def test_component_for_key(key, component):
    assert component_for_key(key) == component


@pytest.mark.parametrize("key,ignored", [
    ("betas", True), ("alphas_cumprod", True), ("model_ema.decay", True),
    ("model_ema.diffusion_modelinput_blocks00weight", True),
    ("cond_stage_model.transformer.text_model.embeddings.position_ids", True),
    ("text_model.embeddings.position_ids", True),
    ("cond_stage_model.model.logit_scale", True),
    ("first_stage_model.loss.discriminator.main.0.weight", True),
    ("state_dict.betas", True),
    ("optimizer_states.0.state.0.exp_avg", True),
    ("model.diffusion_model.betas", False),  # only top-level schedule buffers
    ("model.diffusion_model.out.2.weight", False),
    ("text_model.embeddings.position_embedding.weight", False),
])
def test_ignored_keys(key, ignored):
    assert is_ignored_key(key) is ignored


def test_schedule_keys_in_builder_are_ignored():
    assert all(is_ignored_key(k) for k in SCHEDULE_KEYS)


# --- JSON and dispatch ----------------------------------------------------------------------

def test_json_round_trip_with_and_without_digests(tmp_path):
    fp = _fp(tmp_path, sd_checkpoint())
    full = Fingerprint.from_json(fp.to_json(include_digests=True))
    assert full == fp
    slim = Fingerprint.from_json(fp.to_json())
    assert slim.digests == () and "digests" not in json.loads(fp.to_json())
    assert (slim.content_id, slim.components, slim.dtypes, slim.parameters) == (
        fp.content_id, fp.components, fp.dtypes, fp.parameters)
    assert Fingerprint.from_json(fp.to_dict()) == slim


def test_similarity_without_digests_counts_whole_components(tmp_path):
    base_state = sd_checkpoint()
    base = Fingerprint.from_json(_fp(tmp_path, base_state, "a.safetensors").to_json())
    tuned = Fingerprint.from_json(_fp(tmp_path, fine_tune(base_state), "b.safetensors").to_json())
    sizes = component_bytes(base_state)
    assert similarity(base, tuned) == pytest.approx((sizes["vae"] + sizes["text_encoder"]) / sum(sizes.values()))


@pytest.mark.parametrize("text", ["{", "[]", '{"version": 99}', '{"version": 1}'])
def test_from_json_rejects_garbage(text):
    with pytest.raises(FingerprintError):
        Fingerprint.from_json(text)


def test_parameters_and_bytes(tmp_path):
    state = sd_weights()
    fp = _fp(tmp_path, state)
    assert fp.parameters == sum(v.numel() for v in state.values())
    assert fp.nbytes == sum(component_bytes(state).values())
    assert fp.components["vae"].parameters == sum(v.numel() for k, v in state.items() if k.startswith("first_stage"))


def test_unreadable_formats_raise_model_file_error(tmp_path):
    png = tmp_path / "image.safetensors"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(ModelFileError):
        fingerprint_path(png)
    with pytest.raises(ModelFileError):
        fingerprint_path(tmp_path)  # a folder without model_index.json


def test_corrupt_weight_file_in_a_folder_raises_model_file_error(tmp_path):
    root = write_diffusers_folder(tmp_path / "d", sd_weights())
    target = root / "vae" / "diffusion_pytorch_model.safetensors"
    target.write_bytes(target.read_bytes()[:-3])
    with pytest.raises(ModelFileError):
        fingerprint_path(root)
