"""The compiled loops behind narrowing.py's `Narrower` and `FourNarrower`. PURE.

numba compiles these to machine code on first use (cached under __pycache__): one pass over the
F32 bits per call, no temporaries. The numpy-ufunc version of the same algorithm (v4) made ~10
passes over memory per format and held the fingerprint to ~0.3 GB/s. Each format's constants are
module globals, which numba freezes into the code, so every shift and select is specialised (and
BF16's or NaN-sign branches fold away). `nogil`: the fingerprint hashes on a second thread meanwhile.
"""
import numba
import numpy as np

from workers.modelfiles.narrowing import BF16, F8_E4M3, F8_E5M2, F16, FloatFormat

_U = np.uint32


def _constants(fmt: FloatFormat) -> tuple:
    return (_U(fmt.shift), _U(fmt.rebias), _U(fmt.normal_min), _U(150 + 1 - fmt.bias - fmt.mantissa_bits),
            _U(fmt.overflow_from), _U(fmt.overflow_bits), _U(fmt.nan), _U(fmt.sign_shift),
            fmt.nan_signed, fmt.exponent_bits == 8)


_C_F16, _C_BF16, _C_E4M3, _C_E5M2 = (_constants(fmt) for fmt in (F16, BF16, F8_E4M3, F8_E5M2))


@numba.njit(inline="always")
def _narrow(x, c):
    """One F32 (bits `x`) -> the format of constants `c`."""
    shift, rebias, normal_min, subnormal_k0, overflow_from, overflow_bits, nan, sign_shift, nan_signed, \
        same_exponent = c
    a = x & _U(0x7FFFFFFF)
    is_nan = a > _U(0x7F800000)
    if same_exponent:  # BF16: round the signed bits; subnormals and overflow to inf fall out of the add
        r = (x + rebias + ((x >> shift) & _U(1))) >> shift
        return nan if is_nan else r
    # Normal range: add half an ulp minus one plus the lowest kept bit (ties to even), rebias, shift.
    normal = (a + rebias + ((a >> shift) & _U(1))) >> shift
    # Below the target's smallest normal: the value in units of its subnormal step, rounded half to
    # even (a shift by k >= 32 would be undefined; from k = 25 on the result is 0 anyway).
    e = a >> _U(23)
    mant = (a & _U(0x7FFFFF)) | (_U(0x800000) if e else _U(0))
    k = min(subnormal_k0 - max(e, _U(1)), _U(31))
    subnormal = (mant + (_U(1) << (k - _U(1))) - _U(1) + ((mant >> k) & _U(1))) >> k
    r = subnormal if a < normal_min else normal
    r = (nan if is_nan else overflow_bits) if a >= overflow_from else r
    sign = (x >> sign_shift) & (_U(1) << (_U(31) - sign_shift))
    if nan_signed:
        return r | sign
    return r | (_U(0) if is_nan else sign)


@numba.njit(nogil=True, cache=True, boundscheck=False)
def narrow_one(bits, out, which):
    # One loop per format so each is specialised on its constants.
    if which == 0:
        for i in range(bits.size):
            out[i] = _narrow(bits[i], _C_F16)
    elif which == 1:
        for i in range(bits.size):
            out[i] = _narrow(bits[i], _C_BF16)
    elif which == 2:
        for i in range(bits.size):
            out[i] = _narrow(bits[i], _C_E4M3)
    else:
        for i in range(bits.size):
            out[i] = _narrow(bits[i], _C_E5M2)


@numba.njit(nogil=True, cache=True, boundscheck=False)
def narrow_four(bits, f16, bf16, e4m3, e5m2):
    # The four precision forms of the fingerprint in one read of the input.
    for i in range(bits.size):
        x = bits[i]
        f16[i] = _narrow(x, _C_F16)
        bf16[i] = _narrow(x, _C_BF16)
        e4m3[i] = _narrow(x, _C_E4M3)
        e5m2[i] = _narrow(x, _C_E5M2)
