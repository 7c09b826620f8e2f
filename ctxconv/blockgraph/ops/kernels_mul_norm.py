"""Batched numpy MUL, MEAN and L2_NORMALIZATION kernels, bit-exact with TFLite Micro.

Integer kernels follow tensorflow/lite/kernels/internal/reference/integer_ops/mul.h,
reference/reduce.h (``QuantizedMeanOrSum``) and integer_ops/l2normalization.h; the float32
kernels are the plain reference for float graphs. Axis 0 of every array is the batch N.
"""

from __future__ import annotations

import math

import numpy as np

from ctxconv.blockgraph.fixedpoint import (
    inv_sqrt_quantized_multiplier_exp,
    multiply_by_quantized_multiplier,
    wrap_int32,
)

#: integer_ops::L2Normalization writes x / ||x|| in Q0.7 (scale 1/128).
L2_OUTPUT_SHIFT = 7


def mul_int8(
    a: np.ndarray,
    b: np.ndarray,
    a_zp: int,
    b_zp: int,
    output_zp: int,
    multiplier: int,
    shift: int,
    act: tuple[int, int],
) -> np.ndarray:
    """reference_integer_ops::Mul / BroadcastMul6DSlow: (a - za)(b - zb) requantized.

    ``multiplier``/``shift``: QuantizeMultiplier(a_scale * b_scale / out_scale) in double.
    """
    prod = (a.astype(np.int64) - a_zp) * (b.astype(np.int64) - b_zp)  # |.| <= 255^2
    out = multiply_by_quantized_multiplier(prod, np.int64(multiplier), np.int64(shift))
    return np.clip(out + output_zp, act[0], act[1]).astype(np.int8)


def mean_int8(
    x: np.ndarray,
    axes: tuple[int, ...],
    keep_dims: bool,
    input_zp: int,
    output_zp: int,
    multiplier: int,
    shift: int,
) -> np.ndarray:
    """reference_ops::QuantizedMeanOrSum (mean) over ``axes`` (>= 1; axis 0 is the batch).

    int32 sum of the raw values, minus zero point * count, times the input/output multiplier
    folded with 1/count: ``(multiplier << s) / count`` (integer division) and shift - s,
    s = min(floor(log2 count), 32, 31 + shift).
    """
    count = math.prod(x.shape[a] for a in axes)
    total = wrap_int32(x.astype(np.int64).sum(axis=axes, keepdims=keep_dims))
    shifted = wrap_int32(total - np.int64(input_zp) * count)
    s = min(count.bit_length() - 1, 32, 31 + shift)
    mult = (multiplier << s) // count
    out = multiply_by_quantized_multiplier(shifted, np.int64(mult), np.int64(shift - s))
    return np.clip(out + output_zp, -128, 127).astype(np.int8)


def l2_normalization_int8(x: np.ndarray, input_zp: int) -> np.ndarray:
    """reference_integer_ops::L2Normalization over the last axis: int8 out, scale 1/128, zp 0.

    Per row: acc = sum (q - zp)^2 in int32, (multiplier, shift) from
    GetInvSqrtQuantizedMultiplierExp(acc), out = MultiplyByQuantizedMultiplier(q - zp,
    multiplier, shift + 7) clamped to int8.
    """
    v = x.astype(np.int64) - input_zp  # (..., D)
    acc = wrap_int32((v * v).sum(axis=-1))  # (...)
    mult, shift = inv_sqrt_quantized_multiplier_exp(acc)
    out = multiply_by_quantized_multiplier(v, mult[..., None], shift[..., None] + L2_OUTPUT_SHIFT)
    return np.clip(out, -128, 127).astype(np.int8)


def mul_float(a: np.ndarray, b: np.ndarray, relu: bool) -> np.ndarray:
    """Float broadcast multiply."""
    out = a.astype(np.float32) * b.astype(np.float32)
    return np.maximum(out, 0.0) if relu else out


def mean_float(x: np.ndarray, axes: tuple[int, ...], keep_dims: bool) -> np.ndarray:
    """Float mean over ``axes``."""
    return x.astype(np.float32).mean(axis=axes, keepdims=keep_dims, dtype=np.float32)


def l2_normalization_float(x: np.ndarray, epsilon: float = 1e-6) -> np.ndarray:
    """reference_ops::L2Normalization: x / max(||x||, epsilon) over the last axis."""
    xf = x.astype(np.float32)
    norm = np.sqrt((xf * xf).sum(axis=-1, keepdims=True, dtype=np.float32))
    return xf / np.maximum(norm, np.float32(epsilon))
