"""TFLite Micro fixed-point requantization, vectorised in int64 numpy.

These functions reproduce ``QuantizeMultiplier`` (tensorflow/lite/kernels/internal/
quantization_util.cc) and the double-rounding ``MultiplyByQuantizedMultiplier``
(gemmlowp ``SaturatingRoundingDoublingHighMul`` then ``RoundingDivideByPOT``) that TFLM's
reference kernels use by default, so that integer kernels built on them are bit-exact.
All array math runs in int64: a product of two int32 values always fits.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ctxconv.blockgraph.ir import Quant

_INT32_MIN = -(1 << 31)
_INT32_MAX = (1 << 31) - 1


def round_half_away(value: float) -> int:
    """std::round (TfLiteRound): nearest integer, ties away from zero; exact for floats."""
    mag = abs(value)
    base = math.floor(mag)
    rounded = base + (1 if mag - base >= 0.5 else 0)
    return int(rounded) if value >= 0 else -int(rounded)


def quantize_multiplier(real_multiplier: float) -> tuple[int, int]:
    """Split a positive real multiplier into (int32 mantissa in [2^30, 2^31), shift).

    ``real ~= mantissa * 2^(shift - 31)``. Mirrors TFLite: frexp, round half away from
    zero of ``q * 2^31``, the ``q_fixed == 2^31`` carry into the exponent, and the
    underflow rule (shift < -31 -> multiplier 0).
    """
    if real_multiplier == 0.0:
        return 0, 0
    q, shift = math.frexp(real_multiplier)
    q_fixed = round_half_away(q * float(1 << 31))
    if q_fixed == (1 << 31):
        q_fixed //= 2
        shift += 1
    if shift < -31:
        shift = 0
        q_fixed = 0
    return q_fixed, shift


def quantize_multipliers(real_multipliers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``quantize_multiplier`` over a 1-D array: returns (mantissas, shifts) as int64."""
    pairs = [quantize_multiplier(float(m)) for m in np.asarray(real_multipliers, np.float64)]
    mult = np.array([p[0] for p in pairs], np.int64)
    shift = np.array([p[1] for p in pairs], np.int64)
    return mult, shift


def wrap_int32(x: np.ndarray) -> np.ndarray:
    """Two's-complement wrap of int64 values to the int32 range (C int32 overflow)."""
    return ((x + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def saturating_rounding_doubling_high_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """gemmlowp SaturatingRoundingDoublingHighMul on int32 values held in int64.

    The reference adds a sign-dependent nudge (2^30 or 1 - 2^30) and divides by 2^31
    truncating toward zero; for int32 operands both branches equal the floor shift
    ``(a*b + 2^30) >> 31``. The one overflow, a == b == INT32_MIN, saturates.
    """
    out = np.multiply(a, b, dtype=np.int64)
    out += 1 << 30
    out >>= 31
    return np.minimum(out, _INT32_MAX, out=out)


def rounding_divide_by_pot(x: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    """gemmlowp RoundingDivideByPOT: x / 2^exponent, rounding half away from zero.

    Reference: ``(x >> e) + ((x & mask) > (mask >> 1) + (x < 0))``; for e >= 1 that is
    ``(x + 2^(e-1) - 1 + (x >= 0)) >> e``, which needs fewer passes over x.
    """
    x = np.asarray(x, np.int64)
    exponent = np.asarray(exponent, np.int64)
    if exponent.size and int(exponent.min()) >= 1:
        out = x + ((np.int64(1) << (exponent - 1)) - 1)
        out += x >= 0
        out >>= exponent
        return out
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def multiply_by_quantized_multiplier(
    x: np.ndarray, multiplier: np.ndarray, shift: np.ndarray
) -> np.ndarray:
    """TFLite MultiplyByQuantizedMultiplier (double rounding), int32 semantics in int64.

    ``x``: int32 accumulators (any shape); ``multiplier``/``shift`` broadcast against it
    (per-channel: shape (C,) against x (..., C)).
    """
    x = np.asarray(x, np.int64)
    shift = np.asarray(shift, np.int64)
    if shift.size and int(shift.max()) > 0:
        x = wrap_int32(x << np.maximum(shift, 0))  # x * (1 << left_shift) in int32
    return rounding_divide_by_pot(
        saturating_rounding_doubling_high_mul(x, multiplier), np.maximum(-shift, 0)
    )


def multiply_by_quantized_multiplier_smaller_than_one(
    x: np.ndarray, multiplier: np.ndarray, shift: np.ndarray
) -> np.ndarray:
    """TFLite MultiplyByQuantizedMultiplierSmallerThanOneExp (shift <= 0)."""
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(x, multiplier), -shift)


def quantize_value(real: float, scale: float, zero_point: int) -> int:
    """``zero_point + TfLiteRound(real / scale)`` computed in float32 like TFLite."""
    return int(zero_point) + round_half_away(float(np.float32(real) / np.float32(scale)))


def activation_range_int8(relu: bool, scale: float, zero_point: int) -> tuple[int, int]:
    """CalculateActivationRangeQuantized for int8 outputs (NONE or RELU)."""
    lo, hi = -128, 127
    if relu:
        lo = max(lo, quantize_value(0.0, scale, zero_point))
    return lo, hi


def quant_scale(q: Quant | None, what: str) -> float:
    """A per-tensor scale as the float32 TFLite stores, ValueError when absent."""
    if q is None:
        raise ValueError(f"{what} has no quantization parameters")
    return float(np.float32(q.scale[0]))


def channel_multipliers(
    in_q: Quant | None, w_q: Quant | None, out_q: Quant | None, channels: int, what: str
) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel QuantizeMultiplier(in_scale * w_scale[c] / out_scale) in double, as TFLM."""
    in_s = np.float64(quant_scale(in_q, f"{what} input"))
    out_s = np.float64(quant_scale(out_q, f"{what} output"))
    if w_q is None:
        raise ValueError(f"{what} weight has no quantization parameters")
    w_s = np.asarray(w_q.scale, np.float32).astype(np.float64)
    if w_s.size == 1:
        w_s = np.repeat(w_s, channels)
    if w_s.size != channels:
        raise ValueError(f"{what}: {w_s.size} weight scales for {channels} output channels")
    return quantize_multipliers(in_s * w_s / out_s)


def saturating_rounding_multiply_by_pot(x: np.ndarray, exponent: int) -> np.ndarray:
    """gemmlowp SaturatingRoundingMultiplyByPOT<exponent> on int32 values held in int64:
    a saturating left shift for exponent > 0, ``RoundingDivideByPOT`` for exponent < 0."""
    x = np.asarray(x, np.int64)
    if exponent <= 0:
        return rounding_divide_by_pot(x, np.int64(-exponent))
    threshold = (1 << (31 - exponent)) - 1
    out = x << exponent
    out = np.where(x > threshold, _INT32_MAX, out)
    return np.where(x < -threshold, _INT32_MIN, out)


def _bit_length(x: np.ndarray) -> np.ndarray:
    """Bit length of positive int64 values below 2^31 (exact through float64)."""
    return np.frexp(x.astype(np.float64))[1].astype(np.int64)


def inv_sqrt_quantized_multiplier_exp(acc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """TFLite ``GetInvSqrtQuantizedMultiplierExp(acc, kReverseShift)`` per element.

    ``acc`` >= 0 (int32 sums of squares); returns (multiplier, shift) such that
    ``MultiplyByQuantizedMultiplier(x, multiplier, shift)`` ~= x / sqrt(acc). Five
    Newton-Raphson steps in gemmlowp Q3.28 fixed point, reproduced operation by operation.
    """
    acc = np.asarray(acc, np.int64)
    small = acc <= 1  # TFLite treats 0 and 1 alike: the largest multiplier, shift 0
    x_in = np.where(small, 2, acc)
    shift = np.full(acc.shape, 11, np.int64)
    big = x_in >= (1 << 29)
    while big.any():
        x_in = np.where(big, x_in // 4, x_in)
        shift += big
        big = x_in >= (1 << 29)
    pairs = (32 - _bit_length(x_in) - 1) // 2 - 1  # (CountLeadingZeros - 1) / 2 - 1
    shift -= pairs
    x_in = x_in << (2 * pairs)  # in [2^27, 2^29)
    half_input = rounding_divide_by_pot(x_in >> 1, np.int64(1))
    half_three = np.int64((1 << 28) + (1 << 27))  # 1.5 in Q3.28
    x = np.full(acc.shape, 1 << 28, np.int64)  # 1.0 in Q3.28
    for _ in range(5):
        x3 = saturating_rounding_doubling_high_mul(
            saturating_rounding_doubling_high_mul(x, x), x)  # Q9.22
        x3 = saturating_rounding_multiply_by_pot(x3, 6)  # Rescale<3>
        diff = wrap_int32(saturating_rounding_doubling_high_mul(half_three, x)
                          - saturating_rounding_doubling_high_mul(half_input, x3))  # Q6.25
        x = saturating_rounding_multiply_by_pot(diff, 3)  # Rescale<3>
    x = saturating_rounding_doubling_high_mul(x, np.int64(1518500250))  # * sqrt(2)/2 (Q0.31)
    neg = shift < 0
    x = np.where(neg, wrap_int32(x << np.where(neg, -shift, 0)), x)
    shift = np.where(neg, 0, shift)
    mult = np.where(small, _INT32_MAX, x)
    return mult, np.where(small, 0, -shift)
