"""fp8 e5m2 casts and ComfyUI scaled fp8 files: what the fingerprint links, bit-exact with torch."""
import numpy as np
import pytest
import torch

from tests.workers.modelfiles.builders import write_safetensors
from workers.modelfiles.fingerprint import _digest_header, _hash_bytes, _hash_cast, fingerprint_path, fingerprint_tensors
from workers.modelfiles.narrowing import F8_E5M2, Narrower
from workers.modelfiles.types import Tensor

# e5m2: max 57344, ties to inf from 61440, F16's range otherwise; subnormal step 2**-16.
EDGES = [0.0, -0.0, 57344.0, -57344.0, 57345.0, 61439.0, 61440.0, 65504.0, 65520.0, 65536.0, 1e9, 3.4e38,
         float("inf"), float("-inf"), float("nan"), -float("nan"), 2**-14, 2**-14 * 0.99, 2**-16, 2**-17,
         2**-17 * 1.0001, -(2**-17) * 1.0001, 1.5 * 2**-16, 2.5 * 2**-16, 1.125, 1.375, 1.625, 1e-45]


def torch_bits(x: torch.Tensor, dtype) -> np.ndarray:
    return x.to(dtype).view(torch.uint8).numpy().copy()


def values(n=100_000, seed=0):
    g = torch.Generator().manual_seed(seed)
    mixed = torch.cat([torch.randn(n, generator=g) * s for s in (1e-5, 0.001, 0.02, 1.0, 1000.0, 30000.0)])
    return torch.cat([mixed, torch.tensor(EDGES)])


def carried(x: torch.Tensor) -> np.ndarray:
    if x.dtype == torch.bfloat16:
        return x.view(torch.int16).numpy().view(np.uint16).copy()
    if x.dtype in (torch.float8_e4m3fn, torch.float8_e5m2):
        return x.view(torch.uint8).numpy().copy()
    return x.numpy().copy()


KINDS = {torch.float32: "F32", torch.float64: "F64", torch.float16: "F16", torch.bfloat16: "BF16",
         torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2"}


def t(name, x: torch.Tensor) -> Tensor:
    return Tensor(name=name, dtype=KINDS[x.dtype], shape=tuple(x.shape), array=carried(x))


def test_e5m2_narrowing_matches_torch_element_by_element():
    v = values(seed=1)
    ours = Narrower(F8_E5M2, v.numel())(v.numpy().view(np.uint32))
    assert np.array_equal(ours, torch_bits(v, torch.float8_e5m2))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_e5m2_digest_is_the_digest_of_torchs_cast(dtype):
    v = values().to(dtype)
    header = _digest_header("F8_E5M2", tuple(v.shape))
    assert _hash_cast(header, carried(v), KINDS[dtype], F8_E5M2) == _hash_bytes(header, torch_bits(v, torch.float8_e5m2))


def model(seed=3):
    g = torch.Generator().manual_seed(seed)
    return {f"blocks.{i}.weight": torch.randn(64, 48, generator=g) * 0.05 for i in range(3)} | {
        "blocks.0.bias": torch.randn(64, generator=g) * 0.01}


def test_an_fp16_model_and_its_e5m2_cast_share_e5m2_id_and_only_that():
    state = model()
    f16 = fingerprint_tensors([t(k, v.half()) for k, v in state.items()])
    e5 = fingerprint_tensors([t(k, v.half().to(torch.float8_e5m2)) for k, v in state.items()])
    assert f16.e5m2_id == e5.e5m2_id == e5.content_id != ""
    assert f16.content_id != e5.content_id and f16.precision_id != e5.precision_id and f16.fp8_id != e5.fp8_id
    # An fp32 model and its direct e5m2 cast share it too; an e4m3fn copy is not an e5m2 one.
    f32 = fingerprint_tensors([t(k, v) for k, v in state.items()])
    direct = fingerprint_tensors([t(k, v.to(torch.float8_e5m2)) for k, v in state.items()])
    e4 = fingerprint_tensors([t(k, v.to(torch.float8_e4m3fn)) for k, v in state.items()])
    assert f32.e5m2_id == direct.e5m2_id != e4.e5m2_id and f32.fp8_id == e4.fp8_id != direct.fp8_id


def test_unrelated_seeds_never_share_an_e5m2_id():
    ids = {fingerprint_tensors([t(k, v.to(torch.float8_e5m2)) for k, v in model(seed).items()]).e5m2_id
           for seed in range(5)}
    assert len(ids) == 5


def test_an_e5m2_safetensors_file_is_read_and_linked_to_its_source(tmp_path):
    state = model(seed=4)
    src = write_safetensors(tmp_path / "m.safetensors", {k: v.half() for k, v in state.items()})
    cast = write_safetensors(tmp_path / "m-e5m2.safetensors", {k: v.half().to(torch.float8_e5m2) for k, v in state.items()})
    a, b = fingerprint_path(src), fingerprint_path(cast)
    assert b.dtypes == {"F8_E5M2": 4} and a.e5m2_id == b.e5m2_id and a.content_id != b.content_id


def test_an_e5m2_torch_checkpoint_is_read_too(tmp_path):
    state = {k: v.to(torch.float8_e5m2) for k, v in model(seed=5).items()}
    torch.save(state, tmp_path / "m.pt")
    st = write_safetensors(tmp_path / "m.safetensors", state)
    assert fingerprint_path(tmp_path / "m.pt").content_id == fingerprint_path(st).content_id


# --- ComfyUI scaled fp8 ---------------------------------------------------------------------------

def comfy_scaled(state: dict, *, scale_factor=1.0, with_scales=True, with_input_scale=True) -> dict:
    """A scaled fp8 state dict as ComfyUI's convention has it: per-tensor absmax scale, fp8 weight,
    F32 `scale_weight` scalar (and `scale_input`), the `scaled_fp8` marker; biases stay as they are."""
    out = {"scaled_fp8": torch.empty(0, dtype=torch.float8_e4m3fn)}
    for k, v in state.items():
        if not k.endswith(".weight"):
            out[k] = v
            continue
        layer = k[: -len(".weight")]
        scale = (v.abs().max() / 448.0).float()
        out[k] = (v.float() / scale).to(torch.float8_e4m3fn)
        if with_scales:
            out[f"{layer}.scale_weight"] = (scale * scale_factor).reshape(())
        if with_input_scale:
            out[f"{layer}.scale_input"] = torch.tensor(1.0)
    return out


def dequantised(scaled: dict, dtype) -> dict:
    """What ComfyUI computes with (weight.to(dtype) * scale_weight), saved as a plain `dtype` file."""
    out = {}
    for k, v in scaled.items():
        if k == "scaled_fp8" or k.endswith((".scale_weight", ".scale_input")):
            continue
        scale = scaled.get(k[: -len(".weight")] + ".scale_weight") if k.endswith(".weight") else None
        out[k] = v.to(dtype) * scale if scale is not None else v.to(dtype)
    return out


def fp_of(tmp_path, name, state):
    return fingerprint_path(write_safetensors(tmp_path / name, state))


def test_a_scaled_fp8_file_is_digested_de_scaled_and_meets_its_dequantised_exports(tmp_path):
    state = model(seed=6)
    scaled = comfy_scaled(state)
    fp = fp_of(tmp_path, "scaled.safetensors", scaled)
    # The scales and the marker are not tensors of the model: 4 weights/biases, no F32 scalars counted.
    assert fp.tensors == 4 and fp.dtypes == {"F8_E4M3": 3, "F32": 1} and fp.ignored_tensors == 7
    f16 = fp_of(tmp_path, "dequant-fp16.safetensors", dequantised(scaled, torch.float16))
    bf16 = fp_of(tmp_path, "dequant-bf16.safetensors", dequantised(scaled, torch.bfloat16))
    assert fp.precision_id == f16.precision_id and fp.bf16_id == bf16.bf16_id
    assert fp.content_id not in (f16.content_id, bf16.content_id)
    # Without de-scaling the stored fp8 values would match neither export.
    plain = fp_of(tmp_path, "plain.safetensors", comfy_scaled(state, with_scales=False, with_input_scale=False))
    assert plain.precision_id != f16.precision_id and plain.bf16_id != bf16.bf16_id


def test_a_scaled_fp8_file_is_not_a_digest_match_of_its_full_precision_source(tmp_path):
    # fp8 / scale is not on any cast grid of the source: no exact digest can meet it (see fingerprint.py).
    state = model(seed=7)
    src, scaled = fp_of(tmp_path, "src.safetensors", state), fp_of(tmp_path, "s.safetensors", comfy_scaled(state))
    assert not {src.content_id, src.precision_id, src.bf16_id, src.fp8_id, src.e5m2_id} & {
        scaled.content_id, scaled.precision_id, scaled.bf16_id, scaled.fp8_id, scaled.e5m2_id}


def ids(fp):
    return (fp.content_id, fp.precision_id, fp.bf16_id, fp.fp8_id, fp.e5m2_id)


def test_a_missing_or_wrong_scale_is_not_the_same_weights(tmp_path):
    state = model(seed=8)
    good = fp_of(tmp_path, "good.safetensors", comfy_scaled(state))
    missing = fp_of(tmp_path, "missing.safetensors", comfy_scaled(state, with_scales=False))
    wrong = fp_of(tmp_path, "wrong.safetensors", comfy_scaled(state, scale_factor=2.0))
    assert not set(ids(good)) & set(ids(missing)) and not set(ids(good)) & set(ids(wrong))
    assert not set(ids(missing)) & set(ids(wrong))
    # A missing scale counts as 1, as in ComfyUI: the stored fp8 values, like any plain fp8 file.
    plain = fp_of(tmp_path, "plain.safetensors", {k: v for k, v in comfy_scaled(state, with_scales=False).items()
                                                  if not k.endswith("scale_input") and k != "scaled_fp8"})
    assert ids(missing) == ids(plain)


@pytest.mark.parametrize("bad", [torch.tensor(0.0), torch.tensor(-0.01), torch.tensor(float("nan")),
                                 torch.tensor(float("inf")), torch.tensor(1, dtype=torch.int32)])
def test_a_scale_that_cannot_scale_is_refused_with_a_reason(tmp_path, bad):
    from workers.modelfiles.types import ModelFileError

    scaled = comfy_scaled(model(seed=9))
    scaled["blocks.1.scale_weight"] = bad
    with pytest.raises(ModelFileError, match="blocks.1.scale_weight.*scale_weight must be"):
        fp_of(tmp_path, "bad.safetensors", scaled)


def test_a_tensor_named_scale_weight_that_holds_many_numbers_is_an_ordinary_tensor(tmp_path):
    state = model(seed=13) | {"blocks.1.scale_weight": torch.randn(64)}
    fp = fp_of(tmp_path, "own.safetensors", state)
    assert fp.tensors == 5 and fp.ignored_tensors == 0
    assert fp.content_id == fingerprint_tensors([t(k, v) for k, v in state.items()]).content_id


def test_a_scale_after_its_weight_gives_the_same_ids(tmp_path):
    # torch.save keeps state-dict order (weight, then its scale); safetensors puts F32 scales first.
    scaled = comfy_scaled(model(seed=10))
    in_order = {}
    for k in sorted(scaled, key=lambda k: (k.rsplit(".", 1)[0], k.endswith("scale_weight"))):
        in_order[k] = scaled[k]
    torch.save(in_order, tmp_path / "scaled.pt")
    assert ids(fingerprint_path(tmp_path / "scaled.pt")) == ids(fp_of(tmp_path, "scaled.safetensors", scaled))


def test_unrelated_seeds_never_share_a_scaled_id(tmp_path):
    fps = [fp_of(tmp_path, f"{seed}.safetensors", comfy_scaled(model(seed=20 + seed))) for seed in range(4)]
    for i, a in enumerate(fps):
        for b in fps[i + 1:]:
            assert not set(ids(a)) & set(ids(b))


@pytest.mark.parametrize("dtype", ["keep", "fp16", "bf16"])
def test_converting_a_scaled_fp8_checkpoint_keeps_its_scales_and_its_weights(tmp_path, dtype):
    from workers.convert import convert_checkpoint
    from workers.modelfiles.safetensors_reader import read_safetensors_header

    scaled = comfy_scaled(model(seed=11))
    torch.save(scaled, tmp_path / "scaled.pt")
    source = fingerprint_path(tmp_path / "scaled.pt")
    out = tmp_path / "out.safetensors"
    result = convert_checkpoint(tmp_path / "scaled.pt", out, dtype=dtype, expect_content_id=source.content_id,
                                expect_precision_id=source.precision_id)
    written = {e.name: e.dtype for e in read_safetensors_header(out).tensors}
    assert written["blocks.1.scale_weight"] == "F32" and written["blocks.1.weight"] == "F8_E4M3"
    after = fingerprint_path(out)
    if dtype == "keep":
        assert result.verification.content_id == after.content_id == source.content_id
    elif dtype == "fp16":
        assert result.verification.precision_id == after.precision_id == source.precision_id
    else:  # the bias is cast to bf16; the de-scaled weights are unchanged
        assert after.bf16_id == source.bf16_id


def test_analysis_of_a_file_with_a_bad_scale_says_why_it_has_no_fingerprint(tmp_path):
    from workers.modelfiles.analyse import analyse_path

    scaled = comfy_scaled(model(seed=12))
    scaled["blocks.2.scale_weight"] = torch.tensor(0.0)
    result = analyse_path(write_safetensors(tmp_path / "bad.safetensors", scaled))
    assert result.fingerprint is None and "blocks.2.scale_weight" in result.error and "positive" in result.error
