"""MUL: checks, run-time parameters, numpy reference, work, in-place rule.

int8: reference_integer_ops::Mul / BroadcastMul6DSlow, ``(a - za)(b - zb)`` requantized
by QuantizeMultiplier(sa * sb / so) in double. ``ctxconv_mul_s8`` reads the same
``MulParams`` (it repeats the second operand, a trailing block of the output).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ctxconv.blockgraph.fixedpoint import multiply_by_quantized_multiplier, quantize_multiplier
from ctxconv.blockgraph.ir import BlockGraph, Op
from ctxconv.blockgraph.ops import base
from ctxconv.blockgraph.ops.kernels import relu_float

#: op kind -> the options it reads; inputs: a, b (broadcast over leading axes)
KINDS = {"MUL": ("relu",)}
#: Two operands broadcast against each other (the interpreter aligns their ranks).
BROADCASTS = True
#: The MCU cost-model field (``McuProfile.cost``) charged per unit of ``macs``.
COST_FIELD = "add_cycles_per_element"
#: TFLM's persistent bytes: TfLiteMulParams and OpDataMul.
TFLM_BUILTIN_BYTES = 4
TFLM_OP_DATA_BYTES = 40
#: The C kernel.
C_FUNCTIONS = {"MUL": "ctxconv_mul_s8"}


@dataclass(frozen=True, eq=False)
class MulParams:
    """int8 MUL parameters (``ctxconv_mul_params``)."""

    C_STRUCT: ClassVar[str] = "ctxconv_mul_params"
    n: int  # output elements
    b_n: int  # elements of the second operand
    a_offset: int  # minus the zero points
    b_offset: int
    out_offset: int
    mult: int
    shift: int
    act_min: int
    act_max: int


@dataclass(frozen=True, eq=False)
class MulFloatParams:
    """float32 MUL parameters."""

    relu: bool


validate = base.validate_broadcast


def prepare(graph: BlockGraph, op: Op) -> MulParams | MulFloatParams:
    """The op's run-time parameters (TFLM's MulPrepare)."""
    if not base.is_int8(graph, op):
        return MulFloatParams(base.relu(op))
    what = base.describe(graph, op)
    a, b, out = base.tensor(graph, op, 0), base.tensor(graph, op, 1), base.output(graph, op)
    real = (base.scale(a, f"{what} input a") * base.scale(b, f"{what} input b")
            / base.scale(out, f"{what} output"))
    mult, shift = quantize_multiplier(real)
    lo, hi = base.act_range(graph, op)
    return MulParams(n=base.elements(out.shape), b_n=base.elements(b.shape),
                     a_offset=-base.zero_point(a), b_offset=-base.zero_point(b),
                     out_offset=base.zero_point(out), mult=mult, shift=shift, act_min=lo,
                     act_max=hi)


def reference(p: MulParams | MulFloatParams, inputs: list[np.ndarray]) -> np.ndarray:
    """The op on a batch; ``inputs`` are the two operands, broadcastable (numpy)."""
    a, b = inputs
    if isinstance(p, MulFloatParams):
        return relu_float(a.astype(np.float32) * b.astype(np.float32), p.relu)
    prod = (a.astype(np.int64) + p.a_offset) * (b.astype(np.int64) + p.b_offset)  # <= 255^2
    out = multiply_by_quantized_multiplier(prod, np.int64(p.mult), np.int64(p.shift))
    return np.clip(out + p.out_offset, p.act_min, p.act_max).astype(np.int8)


macs = base.elementwise_macs
c_scratch_bytes = base.no_scratch
in_place = base.elementwise_in_place


def check_c(graph: BlockGraph, op: Op, params: MulParams) -> None:
    """``ctxconv_mul_s8`` repeats the second operand (a trailing block) along the first."""
    a, b, out = base.tensor(graph, op, 0), base.tensor(graph, op, 1), base.output(graph, op)
    base.check_trailing_block("MUL", a, b, out)
