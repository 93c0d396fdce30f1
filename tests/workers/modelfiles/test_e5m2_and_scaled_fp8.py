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
