"""L2_NORMALIZATION: checks, run-time parameters, numpy reference, work, in-place rule.

int8: reference_integer_ops::L2Normalization over the last axis. Per row: acc = sum
(q - zp)^2 in int32, (multiplier, shift) from GetInvSqrtQuantizedMultiplierExp(acc),
out = MultiplyByQuantizedMultiplier(q - zp, multiplier, shift + 7) clamped to int8: the
output has TFLite's fixed quantization, scale 1/128 and zero point 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ctxconv.blockgraph.fixedpoint import (
    inv_sqrt_quantized_multiplier_exp,
    multiply_by_quantized_multiplier,
    wrap_int32,
)
from ctxconv.blockgraph.ir import L2_NORM_QUANT, BlockGraph, Op
from ctxconv.blockgraph.ops import base

#: The TFLite op name, for callers that must name the op in words (errors, reports).
KIND = "L2_NORMALIZATION"
#: op kind -> the options it reads (none); the input is normalised over its last axis
KINDS: dict[str, tuple[str, ...]] = {KIND: ()}
#: Two operands broadcast against each other (the interpreter aligns their ranks).
BROADCASTS = False
#: The MCU cost-model field (``McuProfile.cost``) charged per unit of ``macs``.
COST_FIELD = "add_cycles_per_element"
#: TFLM's persistent bytes: TfLiteL2NormParams and L2NormalizationParams.
TFLM_BUILTIN_BYTES = 4
TFLM_OP_DATA_BYTES = 4
#: integer_ops::L2Normalization writes x / ||x|| in Q0.7 (scale 1/128).
OUTPUT_SHIFT = 7
#: Largest depth whose int32 sum of squares cannot overflow ((q - zp)^2 <= 255^2).
MAX_DEPTH = (2**31 - 1) // (255 * 255)
#: The C kernel.
C_FUNCTIONS = {KIND: "ctxconv_l2norm_s8"}
#: The op rescales each sample to unit norm (``ops.normalizes_per_sample``): its int8
#: output has TFLite's fixed step 1/128 whatever the input, so the few LSB a value of a long
#: unit vector gets make its output float-sensitive (``unit_rms_lsb``).
PER_SAMPLE_NORM = True


@dataclass(frozen=True, eq=False)
class L2NormParams:
    """int8 L2_NORMALIZATION parameters (``ctxconv_l2norm_params``)."""

    C_STRUCT: ClassVar[str] = "ctxconv_l2norm_params"
    outer: int  # rows
    depth: int  # elements per row (the last axis)
    in_offset: int  # minus the input zero point


@dataclass(frozen=True, eq=False)
class L2NormFloatParams:
    """float32 L2_NORMALIZATION parameters."""

    epsilon: float = 1e-6


def validate(graph: BlockGraph, op: Op) -> None:
    """Rank <= 4, the output shaped like the input, TFLite's int8 output quantization."""
    what = base.describe(graph, op)
    x, out = base.tensor(graph, op, 0), base.output(graph, op)
    if len(x.shape) > 4:
        raise ValueError(f"{what}: input rank {len(x.shape)} > 4")
    if tuple(out.shape) != tuple(x.shape):
        raise ValueError(f"{what}: output {out.shape}, expected {x.shape}")
    if out.dtype == "int8" and (
            out.quant is None
            or not math.isclose(float(out.quant.scale[0]), L2_NORM_QUANT[0], rel_tol=1e-6)
            or int(out.quant.zero_point[0]) != L2_NORM_QUANT[1]):
        raise ValueError(f"{what}: output must be int8 scale 1/128, zero point 0")


def prepare(graph: BlockGraph, op: Op) -> L2NormParams | L2NormFloatParams:
    """The op's run-time parameters."""
    if not base.is_int8(graph, op):
        return L2NormFloatParams()
    x = base.tensor(graph, op, 0)
    depth = int(x.shape[-1])
    return L2NormParams(outer=base.elements(x.shape) // depth, depth=depth,
                        in_offset=-base.zero_point(x))


def reference(p: L2NormParams | L2NormFloatParams, inputs: list[np.ndarray]) -> np.ndarray:
    """The op on a batch, over the last axis."""
    x = inputs[0]
    if isinstance(p, L2NormFloatParams):  # x / max(||x||, epsilon)
        xf = x.astype(np.float32)
        norm = np.sqrt((xf * xf).sum(axis=-1, keepdims=True, dtype=np.float32))
        return xf / np.maximum(norm, np.float32(p.epsilon))
    v = x.astype(np.int64) + p.in_offset  # (..., D)
    acc = wrap_int32((v * v).sum(axis=-1))  # (...)
    mult, shift = inv_sqrt_quantized_multiplier_exp(acc)
    out = multiply_by_quantized_multiplier(v, mult[..., None], shift[..., None] + OUTPUT_SHIFT)
    return np.clip(out, -128, 127).astype(np.int8)


def macs(graph: BlockGraph, op: Op) -> int:
    """Twice the input elements (squares, then rescale)."""
    return 2 * base.elements(base.tensor(graph, op, 0).shape)


c_scratch_bytes = base.no_scratch


def in_place(graph: BlockGraph, op: Op) -> bool:
    """Each row's sum of squares is taken before the row is written."""
    return True


def unit_rms_lsb(graph: BlockGraph, op: Op) -> float:
    """RMS output value, in LSB, of a unit-norm sample: n values at step 1/128 have an RMS
    of 128 / sqrt(n) LSB, n the elements of one input sample (all axes but the first)."""
    n = int(np.prod(base.tensor(graph, op, 0).shape[1:]))
    return (1.0 / L2_NORM_QUANT[0]) / float(np.sqrt(n))


def check_c(graph: BlockGraph, op: Op, params: L2NormParams) -> None:
    """``ctxconv_l2norm_s8`` sums the squares of a row in int32."""
    if params.depth > MAX_DEPTH:
        raise ValueError(f"{KIND} over {params.depth} elements can overflow its "
                         "int32 sum of squares")
