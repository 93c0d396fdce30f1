"""One round-to-nearest-even narrowing of F32 bits, parameterised by the target float format. PURE.

The fingerprint casts every float tensor to F16, BF16, float8_e4m3fn and float8_e5m2 and must
agree bit for bit with torch's `.to()` on CPU (checked against torch in the tests). All four are
the same integer algorithm (F. Giesen's float_to_half_fast3, generalised), driven by `FloatFormat`:

- normal range: add half a target ulp minus one, plus the lowest kept bit (ties to even), rebias
  the exponent, shift;
- below the smallest normal: the magnitude in units of the target's subnormal step, shifted down
  with the same half-to-even rounding;
- beyond the largest finite value: inf (IEEE formats: F16, e5m2) or the largest finite value
  (saturating e4m3fn, as torch 2.13's cast writes it); NaN -> the format's NaN.
BF16 shares F32's exponent: the normal step alone decides it (rebias 0; overflow to inf falls out).

Speed: numba compiles the per-element rule (narrowing_kernels.py) into loops that make one pass over the input;
`FourNarrower` writes all four forms in that one pass (bench: ~43 ms of CPU per 64 MiB of F32 for
the four, against ~250 ms for the earlier whole-array numpy version).
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
        values = {
            "shift": shift,
            "out_dtype": np.dtype(np.uint16 if 1 + e + m == 16 else np.uint8),
            "rebias": np.uint32((((bias - 127) << 23) + (1 << (shift - 1)) - 1) & 0xFFFFFFFF),
            "normal_min": (127 + 1 - bias) << 23,
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


_KERNEL_FORMATS = (F16, BF16, F8_E4M3, F8_E5M2)  # the order of `which` and of `_narrow_four`'s outputs


def _kernels():
    # Imported on first use: numba (LLVM) adds ~125 MiB to a process, which the web processes, that
    # read fingerprints but never compute them, should not carry.
    from workers.modelfiles import narrowing_kernels
    return narrowing_kernels


class Narrower:
    """F32 bits -> `fmt` bits, RNE, into an output buffer reused across calls of up to `size` elements."""

    def __init__(self, fmt: FloatFormat, size: int) -> None:
        self.fmt = fmt
        self.which = _KERNEL_FORMATS.index(fmt)
        self.out = np.empty(size, dtype=fmt.out_dtype)

    def __call__(self, bits: np.ndarray) -> np.ndarray:
        """`bits` (uint32 views of F32 values) narrowed; the returned array is scratch, valid until the next call."""
        out = self.out[:bits.size]
        _kernels().narrow_one(np.ascontiguousarray(bits), out, self.which)
        return out


class FourNarrower:
    """F32 bits -> (F16, BF16, F8_E4M3, F8_E5M2) bits in one pass, into buffers reused across calls."""

    FORMATS = _KERNEL_FORMATS

    def __init__(self, size: int) -> None:
        self.outs = tuple(np.empty(size, dtype=fmt.out_dtype) for fmt in self.FORMATS)

    def __call__(self, bits: np.ndarray, outs: tuple[np.ndarray, ...] | None = None) -> tuple[np.ndarray, ...]:
        """The four narrowed forms of `bits` (into `outs` if given, else this narrower's own buffers)."""
        outs = tuple(o[:bits.size] for o in (outs or self.outs))
        _kernels().narrow_four(np.ascontiguousarray(bits), *outs)
        return outs


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
