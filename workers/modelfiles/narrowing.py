"""One round-to-nearest-even narrowing of F32 bits, parameterised by the target float format. PURE.

The fingerprint casts every float tensor to F16, BF16, float8_e4m3fn and float8_e5m2 and must
agree bit for bit with torch's `.to()` on CPU (checked against torch in the tests). All four are
the same integer algorithm (F. Giesen's float_to_half_fast3, generalised), driven by `FloatFormat`:

- normal range: add half a target ulp minus one, plus the lowest kept bit (ties to even), rebias
  the exponent, shift;
- below the smallest normal: an F32 add of a "magic" power of two aligns the bits at the target's
  subnormal step and rounds (RNE) for us;
- beyond the largest finite value: inf (IEEE formats: F16, e5m2) or the largest finite value
  (saturating e4m3fn, as torch 2.13's cast writes it); NaN -> the format's NaN.
BF16 shares F32's exponent, so it is the normal-range step alone, on the signed bits (subnormals
and overflow to inf fall out of the add).

Speed: every step is a whole-array numpy ufunc into preallocated scratch. The subnormal results are
blended in with xor/and on an all-ones mask (5 passes) when they are many: `copyto(where=)` is a
branchy loop, ~8x slower than the blend when a random half of the values are subnormal (fp8 casts of
weights), faster when under ~3% are (F16 casts).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class FloatFormat:
    name: str  # the safetensors dtype
    exponent_bits: int
    mantissa_bits: int
    bias: int
    finite_only: bool  # e4m3fn: no inf, the top exponent holds numbers, |x| beyond the max saturates
    nan: int  # the NaN written (sign bit clear)
    nan_signed: bool  # the NaN keeps the input's sign
    # Derived constants (see __post_init__).
    shift: int = field(init=False)
    out_dtype: np.dtype = field(init=False)
    rebias: np.uint32 = field(init=False)
    normal_min: int = field(init=False)
    magic: int = field(init=False)
    magic_f32: np.float32 = field(init=False)
    overflow_from: int = field(init=False)
    overflow_bits: int = field(init=False)
    sign_shift: int = field(init=False)

    def __post_init__(self) -> None:
        e, m, bias = self.exponent_bits, self.mantissa_bits, self.bias
        shift = 23 - m
        top = (1 << e) - 1  # the all-ones exponent
        if self.finite_only:  # the top exponent is finite; only its all-ones mantissa is NaN
            max_mantissa = (1 << m) - 2
            max_finite = ((top - bias + 127) << 23) | (max_mantissa << shift)
            overflow_from, overflow_bits = max_finite + 1, (top << m) | max_mantissa
        else:  # IEEE: from 2**(emax + 1) on the normal step cannot hold it: inf
            overflow_from, overflow_bits = (top - bias + 127) << 23, top << m
        magic = (127 + 1 - bias - m + 23) << 23  # 2**(23 + the exponent of the subnormal step)
        values = {
            "shift": shift,
            "out_dtype": np.dtype(np.uint16 if 1 + e + m == 16 else np.uint8),
            "rebias": np.uint32((((bias - 127) << 23) + (1 << (shift - 1)) - 1) & 0xFFFFFFFF),
            "normal_min": (127 + 1 - bias) << 23,
            "magic": magic,
            "magic_f32": np.array([magic], dtype=np.uint32).view(np.float32)[0],
            "overflow_from": overflow_from,
            "overflow_bits": overflow_bits,
            "sign_shift": 32 - (1 + e + m),
        }
        for name, value in values.items():
            object.__setattr__(self, name, value)
        if not self.nan_signed and e != 8:
            raise ValueError(f"{self.name}: an unsigned NaN is only implemented for F32's exponent width")


F16 = FloatFormat("F16", 5, 10, 15, finite_only=False, nan=0x7E00, nan_signed=True)
# BF16 NaN: 0x7FC0, sign dropped (torch writes 0xFFFF or 0x7FC0 for one NaN depending on the code path).
BF16 = FloatFormat("BF16", 8, 7, 127, finite_only=False, nan=0x7FC0, nan_signed=False)
F8_E4M3 = FloatFormat("F8_E4M3", 4, 3, 7, finite_only=True, nan=0x7F, nan_signed=True)
F8_E5M2 = FloatFormat("F8_E5M2", 5, 2, 15, finite_only=False, nan=0x7F, nan_signed=True)
FORMATS = {f.name: f for f in (F16, BF16, F8_E4M3, F8_E5M2)}


class Narrower:
    """F32 bits -> `fmt` bits, RNE, with scratch reused across calls of up to `size` elements."""

    def __init__(self, fmt: FloatFormat, size: int) -> None:
        self.fmt = fmt
        self.magnitude = np.empty(size, dtype=np.uint32)
        self.result = np.empty(size, dtype=np.uint32)
        self.scratch = np.empty(size, dtype=np.uint32)
        self.blend = np.empty(size, dtype=np.uint32)
        self.mask = np.empty(size, dtype=bool)
        self.out = np.empty(size, dtype=fmt.out_dtype)

    def __call__(self, bits: np.ndarray) -> np.ndarray:
        """`bits` (uint32 views of F32 values) narrowed; the returned array is scratch, valid until the next call."""
        k = bits.size
        fmt = self.fmt
        a, t, s, b, m, out = (x[:k] for x in (self.magnitude, self.result, self.scratch, self.blend, self.mask,
                                              self.out))
        with np.errstate(all="ignore"):
            if fmt.exponent_bits == 8:
                return self._same_exponent(bits, t, m, out)
            np.bitwise_and(bits, 0x7FFFFFFF, out=a)
            np.right_shift(a, fmt.shift, out=t)
            np.bitwise_and(t, 1, out=t)  # the lowest kept bit: ties go to even
            np.add(t, a, out=t)
            np.add(t, fmt.rebias, out=t)
            np.right_shift(t, fmt.shift, out=t)
            np.less(a, fmt.normal_min, out=m)
            subnormal = np.count_nonzero(m)
            if subnormal:
                np.add(a.view(np.float32), fmt.magic_f32, out=s.view(np.float32))
                np.subtract(s, fmt.magic, out=s)
                if subnormal < k >> 5:  # few (F16 of weights): the masked copy's branches predict well
                    np.copyto(t, s, where=m)
                else:  # many (fp8): blend where b is all ones, i.e. a < normal_min (a's top bit is clear)
                    np.subtract(a, fmt.normal_min, out=b)
                    np.right_shift(b.view(np.int32), 31, out=b.view(np.int32))
                    np.bitwise_xor(t, s, out=s)
                    np.bitwise_and(s, b, out=s)
                    np.bitwise_xor(t, s, out=t)
            np.greater_equal(a, fmt.overflow_from, out=m)
            if m.any():  # rare: NaN, inf, |x| beyond the range
                t[m] = np.where(a[m] > 0x7F800000, fmt.nan, fmt.overflow_bits)
            np.right_shift(bits, fmt.sign_shift, out=s)
            np.bitwise_and(s, 1 << (31 - fmt.sign_shift), out=s)
            np.bitwise_or(t, s, out=t)
            np.copyto(out, t, casting="unsafe")
        return out

    def _same_exponent(self, bits: np.ndarray, t: np.ndarray, m: np.ndarray, out: np.ndarray) -> np.ndarray:
        """BF16: no rebias, so round the signed bits in place; NaN inputs may wrap: replaced after."""
        fmt = self.fmt
        np.right_shift(bits, fmt.shift, out=t)
        np.bitwise_and(t, 1, out=t)
        np.add(t, fmt.rebias, out=t)
        np.add(t, bits, out=t)
        np.right_shift(t, fmt.shift, out=out, casting="unsafe")
        np.isnan(bits.view(np.float32), out=m)
        if m.any():
            sign = (bits[m] >> fmt.sign_shift) & (1 << (31 - fmt.sign_shift)) if fmt.nan_signed else 0
            out[m] = fmt.nan | sign
        return out


def widen_to_f32_bits(piece: np.ndarray, dtype: str, wide: np.ndarray) -> np.ndarray:
    """`piece` (values of `dtype` as the readers carry them) as uint32 F32 bits: F32 read in place;
    BF16 and F16 widen exactly; F64 rounds to nearest even (torch casts a double to a narrower float
    through float, so this double rounding is torch's too); F8 widens exactly through `F8_TO_F32`."""
    if dtype == "F32":
        return piece.view(np.uint32)
    bits = wide[:piece.size]
    if dtype == "BF16":
        np.copyto(bits, piece)
        bits <<= 16  # BF16 is the top half of an F32
    elif dtype in F8_TO_F32:
        np.take(F8_TO_F32[dtype], piece, out=bits)
    else:
        with np.errstate(all="ignore"):  # F64 beyond F32's range becomes inf, as in torch
            np.copyto(bits.view(np.float32), piece, casting="unsafe")
    return bits


def _f8_table(fmt: FloatFormat) -> np.ndarray:
    """All 256 values of an 8-bit format as F32 bits (exact: every fp8 value is an F32)."""
    e, m, bias = fmt.exponent_bits, fmt.mantissa_bits, fmt.bias
    table = np.empty(256, dtype=np.uint32)
    for code in range(256):
        sign = -1.0 if code & 0x80 else 1.0
        exp, man = (code >> m) & ((1 << e) - 1), code & ((1 << m) - 1)
        if fmt.finite_only and exp == (1 << e) - 1 and man == (1 << m) - 1 or not fmt.finite_only and \
                exp == (1 << e) - 1 and man:
            value = float("nan")
        elif not fmt.finite_only and exp == (1 << e) - 1:
            value = sign * float("inf")
        elif exp == 0:
            value = sign * man * 2.0 ** (1 - bias - m)
        else:
            value = sign * (1 + man / (1 << m)) * 2.0 ** (exp - bias)
        table[code] = struct.unpack("<I", struct.pack("<f", value))[0]
        if value != value:  # NaN: the canonical quiet NaN with the code's sign
            table[code] = 0x7FC00000 | (0x80000000 if code & 0x80 else 0)
    return table


F8_TO_F32 = {"F8_E4M3": _f8_table(F8_E4M3), "F8_E5M2": _f8_table(F8_E5M2)}
