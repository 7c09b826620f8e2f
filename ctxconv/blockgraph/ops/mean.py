"""MEAN: checks, run-time parameters, numpy reference, work, TFLM scratch.

int8: reference_ops::QuantizedMeanOrSum (mean): the int32 sum of the raw values, minus
zero point * count, times the input/output multiplier folded with 1/count
(``(multiplier << s) / count`` and ``shift - s``, s = min(floor(log2 count), 32,
31 + shift)). ``prepare`` does the folding once; ``ctxconv_mean_s8`` reads the same
``MeanParams`` (it reduces trailing axes only; the numpy reference reduces any).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ctxconv.blockgraph.fixedpoint import (
    multiply_by_quantized_multiplier,
    quantize_multiplier,
    wrap_int32,
)
from ctxconv.blockgraph.ir import BlockGraph, Op
from ctxconv.blockgraph.ops import base

#: op kind -> the options it reads: axes (reduced; an int32 constant in TFLite), keep_dims
KINDS = {"MEAN": ("axes", "keep_dims")}
#: Two operands broadcast against each other (the interpreter aligns their ranks).
BROADCASTS = False
#: The MCU cost-model field (``McuProfile.cost``) charged per unit of ``macs``.
COST_FIELD = "add_cycles_per_element"
#: TFLM's persistent bytes: TfLiteReducerParams and OpDataReduce.
TFLM_BUILTIN_BYTES = 1
TFLM_OP_DATA_BYTES = 44
#: The C kernel.
C_FUNCTIONS = {"MEAN": "ctxconv_mean_s8"}


@dataclass(frozen=True, eq=False)
class MeanParams:
    """int8 MEAN parameters (``ctxconv_mean_params``)."""

    C_STRUCT: ClassVar[str] = "ctxconv_mean_params"
    outer: int  # output elements
    count: int  # input elements per output element
    zp_times_count: int  # input zero point * count, wrapped to int32
    out_offset: int
    mult: int  # the input/output multiplier folded with 1 / count
    shift: int
    axes: tuple[int, ...] = base.host()
    keep_dims: bool = base.host()


@dataclass(frozen=True, eq=False)
class MeanFloatParams:
    """float32 MEAN parameters."""

    axes: tuple[int, ...]
    keep_dims: bool


def _axes(graph: BlockGraph, op: Op) -> tuple[int, ...]:
    """The reduced axes (not the batch axis 0)."""
    x = base.tensor(graph, op, 0)
    axes = tuple(int(a) for a in op.options["axes"])
    if not axes or len(set(axes)) != len(axes) or any(not 1 <= a < len(x.shape) for a in axes):
        raise ValueError(f"{base.describe(graph, op)}: MEAN axes {axes} must be distinct and "
                         f"in 1..{len(x.shape) - 1} of input {x.shape}")
    return axes


def validate(graph: BlockGraph, op: Op) -> None:
    """Distinct axes, none of them the batch axis; the output shape they leave."""
    x, out = base.tensor(graph, op, 0), base.output(graph, op)
    axes = _axes(graph, op)
    keep = bool(op.options["keep_dims"])
    shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape)) if keep else tuple(
        d for i, d in enumerate(x.shape) if i not in axes)
    if tuple(out.shape) != shape:
        raise ValueError(f"{base.describe(graph, op)}: output {out.shape}, expected {shape}")


def prepare(graph: BlockGraph, op: Op) -> MeanParams | MeanFloatParams:
    """The op's run-time parameters (TFLM's PrepareMeanOrSum, 1/count folded in)."""
    axes = _axes(graph, op)
    keep = bool(op.options["keep_dims"])
    if not base.is_int8(graph, op):
        return MeanFloatParams(axes, keep)
    what = base.describe(graph, op)
    x, out = base.tensor(graph, op, 0), base.output(graph, op)
    count = math.prod(x.shape[a] for a in axes)
    mult, shift = quantize_multiplier(base.scale(x, f"{what} input") /
                                      base.scale(out, f"{what} output"))
    s = min(count.bit_length() - 1, 32, 31 + shift)
    return MeanParams(outer=base.elements(x.shape) // count, count=count,
                      zp_times_count=int(wrap_int32(np.int64(base.zero_point(x)) * count)),
                      out_offset=base.zero_point(out), mult=int((mult << s) // count),
                      shift=shift - s, axes=axes, keep_dims=keep)


def reference(p: MeanParams | MeanFloatParams, inputs: list[np.ndarray]) -> np.ndarray:
    """The op on a batch (axis 0 is never reduced)."""
    x = inputs[0]
    if isinstance(p, MeanFloatParams):
        return x.astype(np.float32).mean(axis=p.axes, keepdims=p.keep_dims, dtype=np.float32)
    total = wrap_int32(x.astype(np.int64).sum(axis=p.axes, keepdims=p.keep_dims))
    shifted = wrap_int32(total - np.int64(p.zp_times_count))
    out = multiply_by_quantized_multiplier(shifted, np.int64(p.mult), np.int64(p.shift))
    return np.clip(out + p.out_offset, -128, 127).astype(np.int8)


def macs(graph: BlockGraph, op: Op) -> int:
    """Input elements."""
    return base.elements(base.tensor(graph, op, 0).shape)


c_scratch_bytes = base.no_scratch


def in_place(graph: BlockGraph, op: Op) -> bool:
    """Not in place (the C kernel's in-place rule is not established for MEAN)."""
    return False


def tflm_scratch(graph: BlockGraph, op: Op) -> list[int]:
    """Bytes of each scratch buffer TFLM's reference kernel requests.

    reduce_common.cc ``PrepareMeanOrSumHelper``: an int32 accumulator per output element
    (int8 only), an int per input dimension (``input_iter``) and an int per reduced axis
    (``resolved_axis``).
    """
    x, y = base.tensor(graph, op, 0), base.output(graph, op)
    acc = [4 * math.prod(y.shape)] if x.dtype == "int8" else []
    return [*acc, 4 * len(x.shape), 4 * len(op.options["axes"])]


def check_c(graph: BlockGraph, op: Op, params: MeanParams) -> None:
    """``ctxconv_mean_s8`` reduces trailing axes with an int32 sum."""
    x = base.tensor(graph, op, 0)
    axes = sorted(int(a) % len(x.shape) for a in op.options["axes"])
    if not axes or 0 in axes or axes != list(range(len(x.shape) - len(axes), len(x.shape))):
        raise ValueError(f"MEAN over axes {tuple(op.options['axes'])} of {x.shape}: the C "
                         "kernel reduces trailing axes only")
    if params.count * 255 >= 1 << 31:
        raise ValueError(f"MEAN over {params.count} elements can overflow int32")
