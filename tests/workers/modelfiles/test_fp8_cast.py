"""The fp8 (e4m3fn) precision id: bit-exact with torch's cast, and what it links."""
import numpy as np
import pytest
import torch

from workers.modelfiles.fingerprint import _digest_header, _hash_as_fp8, _hash_bytes, fingerprint_tensors
from workers.modelfiles.types import Tensor

EDGES = [0.0, -0.0, 448.0, -448.0, 449.0, 464.0, 464.01, 479.9, 480.0, 1e9, -1e9, float("inf"), float("-inf"),
         float("nan"), -float("nan"), 2**-6, 2**-6 * 0.99, 2**-9, 2**-10, 2**-10 * 1.0001, -(2**-10) * 1.0001,
         2**-11, 1.5 * 2**-9, 2.5 * 2**-9, 1.0625, 1.1875, 3.4e38, 1e-45]


def torch_fp8(values: torch.Tensor) -> np.ndarray:
    return values.to(torch.float8_e4m3fn).view(torch.uint8).numpy().copy()


def values(n=200_000, seed=0):
    g = torch.Generator().manual_seed(seed)
    mixed = torch.cat([torch.randn(n, generator=g) * s for s in (0.001, 0.02, 1.0, 100.0, 1000.0)])
    return torch.cat([mixed, torch.tensor(EDGES)])


@pytest.mark.parametrize("dtype, carried", [(torch.float32, "F32"), (torch.float64, "F64"),
                                            (torch.bfloat16, "BF16"), (torch.float16, "F16")])
def test_fp8_digest_is_the_digest_of_torchs_cast(dtype, carried):
    v = values().to(dtype)
    array = v.view(torch.int16).numpy().view(np.uint16) if dtype == torch.bfloat16 else v.numpy()
    header = _digest_header("F8_E4M3", tuple(v.shape))
    assert _hash_as_fp8(header, array.copy(), carried) == _hash_bytes(header, torch_fp8(v))


def test_fp8_cast_bits_match_torch_element_by_element():
    from workers.modelfiles.fingerprint import _f32_bits_to_e4m3fn

    v = values(50_000, seed=1)
    bits = v.numpy().view(np.uint32)
    scratch = tuple(np.empty(bits.size, dtype=np.uint32) for _ in range(3))
    ours = _f32_bits_to_e4m3fn(bits, scratch, np.empty(bits.size, dtype=np.uint8))
    assert np.array_equal(ours, torch_fp8(v))


def t(name, x: torch.Tensor) -> Tensor:
    kinds = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float8_e4m3fn: "F8_E4M3"}
    if x.dtype == torch.bfloat16:
        array = x.view(torch.int16).numpy().view(np.uint16).copy()
    elif x.dtype == torch.float8_e4m3fn:
        array = x.view(torch.uint8).numpy().copy()
    else:
        array = x.numpy().copy()
    return Tensor(name=name, dtype=kinds[x.dtype], shape=tuple(x.shape), array=array)


def test_fp32_bf16_fp16_and_fp8_copies_of_one_model_and_what_they_share():
    g = torch.Generator().manual_seed(3)
    state = {f"w{i}": torch.randn(64, 48, generator=g) * 0.05 for i in range(3)}
    fp = {kind: fingerprint_tensors([t(k, v.to(kind)) for k, v in state.items()])
          for kind in (torch.float32, torch.bfloat16, torch.float16, torch.float8_e4m3fn)}
    f32, b16, f16, f8 = (fp[k] for k in (torch.float32, torch.bfloat16, torch.float16, torch.float8_e4m3fn))
    assert f32.fp8_id == f8.fp8_id == f8.content_id  # an fp32 model and its fp8 cast share fp8_id
    assert len({f32.content_id, b16.content_id, f16.content_id, f8.content_id}) == 4
    # What actually happens for fp16 and bf16 casts of one fp32 model: their fp8 casts are double roundings
    # (fp32 -> bf16 -> fp8, fp32 -> fp16 -> fp8) and differ from the direct fp8 cast somewhere in 9216 values
    # of random weights, so neither links to the fp32 / fp8 copies by fp8_id, nor to each other.
    assert len({f32.fp8_id, b16.fp8_id, f16.fp8_id}) == 3
    # An fp8 cast of the bf16 copy, though, is that copy's fp8 variant.
    f8_of_b16 = fingerprint_tensors([t(k, v.to(torch.bfloat16).to(torch.float8_e4m3fn)) for k, v in state.items()])
    assert f8_of_b16.fp8_id == b16.fp8_id != f32.fp8_id


def test_unrelated_seeds_never_share_an_fp8_id():
    ids = set()
    for seed in range(5):
        g = torch.Generator().manual_seed(seed)
        ids.add(fingerprint_tensors([t("w", torch.randn(32, 32, generator=g) * 0.05)]).fp8_id)
    assert len(ids) == 5


def test_fp8_id_round_trips_through_json():
    from workers.modelfiles.fingerprint import Fingerprint

    fp = fingerprint_tensors([t("w", torch.randn(8, 8))])
    back = Fingerprint.from_json(fp.to_json(include_digests=True))
    assert back.fp8_id == fp.fp8_id != "" and back.digests[0].fp8 == fp.digests[0].fp8
    assert back.components[fp.digests[0].component].fp8_id == fp.fp8_id
