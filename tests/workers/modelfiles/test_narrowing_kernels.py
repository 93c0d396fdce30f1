"""The one-pass narrowing (all four precision forms at once) equals each format's own narrowing,
on bit patterns from every exponent, both signs, the subnormal and overflow edges, inf and NaN."""
import numpy as np

from workers.modelfiles.narrowing import BF16, F8_E4M3, F8_E5M2, F16, FourNarrower, Narrower


def _bit_patterns() -> np.ndarray:
    rng = np.random.default_rng(7)
    spread = np.arange(0, 2**32, 65_521, dtype=np.uint64).astype(np.uint32)  # every exponent, both signs
    edges = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 2.0**-149, 2.0**-24, 2.0**-25, 3 * 2.0**-26,
                      2.0**-9, 2.0**-10, 2.0**-17, 65504, 65519, 65520, 448, 463.9, 464, 480, 57344,
                      61439, 61440, 3.4e38], dtype=np.float32)
    weights = (rng.standard_normal(200_000) * 0.02).astype(np.float32)
    return np.concatenate([spread, edges.view(np.uint32), (-edges).view(np.uint32), weights.view(np.uint32)])


def test_four_at_once_equals_one_at_a_time():
    bits = _bit_patterns()
    four = FourNarrower(bits.size)(bits)
    assert [fmt.name for fmt in FourNarrower.FORMATS] == ["F16", "BF16", "F8_E4M3", "F8_E5M2"]
    for fmt, got in zip((F16, BF16, F8_E4M3, F8_E5M2), four):
        expected = Narrower(fmt, bits.size)(bits)
        assert got.dtype == expected.dtype == fmt.out_dtype
        np.testing.assert_array_equal(got, expected, err_msg=fmt.name)


def test_known_values():
    bits = np.array([1.0, -2.0, 65520.0, 1000.0, np.nan, 2.0**-24, 2.0**-26], dtype=np.float32).view(np.uint32)
    f16, bf16, e4m3, e5m2 = FourNarrower(bits.size)(bits)
    # 65520 rounds up to inf in F16; e4m3fn saturates at 448 (0x7E) as torch 2.13 writes it; e5m2 ties to even.
    assert f16.tolist() == [0x3C00, 0xC000, 0x7C00, 0x63D0, 0x7E00, 0x0001, 0x0000]
    assert bf16.tolist() == [0x3F80, 0xC000, 0x4780, 0x447A, 0x7FC0, 0x3380, 0x3280]
    assert e4m3.tolist()[:4] == [0x38, 0xC0, 0x7E, 0x7E]
    assert e5m2.tolist()[:4] == [0x3C, 0xC0, 0x7C, 0x64]
