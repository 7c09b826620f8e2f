"""ADD: checks, run-time parameters, numpy reference, work, in-place rule.

int8: reference_integer_ops::Add (TFLM's OpDataAdd: each input shifted left by 20 and
rescaled to twice the larger input scale, the sum rescaled to the output). The C kernel
``ctxconv_add_s8`` repeats a trailing block of its second operand along the first, so
``prepare`` puts the operand of the output's size first (ADD is symmetric: swapping the
operands with their parameters gives the same integers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ctxconv.blockgraph.fixedpoint import (
    multiply_by_quantized_multiplier_smaller_than_one,
    quantize_multiplier,
)
from ctxconv.blockgraph.ir import BlockGraph, Op
from ctxconv.blockgraph.ops import base
from ctxconv.blockgraph.ops.kernels import relu_float

#: op kind -> the options it reads; inputs: a, b (broadcast over leading axes)
KINDS = {"ADD": ("relu",)}
#: Two operands broadcast against each other (the interpreter aligns their ranks).
BROADCASTS = True
#: The MCU cost-model field (``McuProfile.cost``) charged per unit of ``macs``.
COST_FIELD = "add_cycles_per_element"
#: TFLM's persistent bytes: TfLiteAddParams and OpDataAdd.
TFLM_BUILTIN_BYTES = 16
TFLM_OP_DATA_BYTES = 64
LEFT_SHIFT = 20  # TFLite's int8 ADD
#: The C kernel.
C_FUNCTIONS = {"ADD": "ctxconv_add_s8"}


@dataclass(frozen=True, eq=False)
class AddParams:
    """int8 ADD parameters (``ctxconv_add_params``), operands in ``order``."""

    C_STRUCT: ClassVar[str] = "ctxconv_add_params"
    n: int  # output elements
    b_n: int  # elements of the second operand
    a_offset: int  # minus the zero points
    b_offset: int
    out_offset: int
    left_shift: int
    a_mult: int
    a_shift: int
    b_mult: int
    b_shift: int
    out_mult: int
    out_shift: int
    act_min: int
    act_max: int
    order: tuple[int, int] = base.host()  # the op's inputs as (a, b)


@dataclass(frozen=True, eq=False)
class AddFloatParams:
    """float32 ADD parameters."""

    relu: bool


validate = base.validate_broadcast


def prepare(graph: BlockGraph, op: Op) -> AddParams | AddFloatParams:
    """The op's run-time parameters (TFLM's PrepareAdd)."""
    if not base.is_int8(graph, op):
        return AddFloatParams(base.relu(op))
    what = base.describe(graph, op)
    order = (1, 0) if base.tensor(graph, op, 0).nbytes < base.tensor(graph, op, 1).nbytes \
        else (0, 1)
    a, b = (base.tensor(graph, op, i) for i in order)
    out = base.output(graph, op)
    sa, sb = base.scale(a, f"{what} input a"), base.scale(b, f"{what} input b")
    so = base.scale(out, f"{what} output")
    twice_max = 2.0 * max(sa, sb)
    am, bm = quantize_multiplier(sa / twice_max), quantize_multiplier(sb / twice_max)
    om = quantize_multiplier(twice_max / ((1 << LEFT_SHIFT) * so))
    if max(am[1], bm[1], om[1]) > 0:
        raise ValueError(f"{what}: int8 ADD needs output_scale >= 2^-20 * max input scale")
    lo, hi = base.act_range(graph, op)
    return AddParams(n=base.elements(out.shape), b_n=base.elements(b.shape),
                     a_offset=-base.zero_point(a), b_offset=-base.zero_point(b),
                     out_offset=base.zero_point(out), left_shift=LEFT_SHIFT, a_mult=am[0],
                     a_shift=am[1], b_mult=bm[0], b_shift=bm[1], out_mult=om[0],
                     out_shift=om[1], act_min=lo, act_max=hi, order=order)


def reference(p: AddParams | AddFloatParams, inputs: list[np.ndarray]) -> np.ndarray:
    """The op on a batch; ``inputs`` are the op's two operands, broadcastable (numpy)."""
    if isinstance(p, AddFloatParams):
        return relu_float(inputs[0].astype(np.float32) + inputs[1].astype(np.float32), p.relu)
    a, b = inputs[p.order[0]], inputs[p.order[1]]
    sa = (a.astype(np.int64) + p.a_offset) << p.left_shift
    sb = (b.astype(np.int64) + p.b_offset) << p.left_shift
    ra = multiply_by_quantized_multiplier_smaller_than_one(sa, p.a_mult, p.a_shift)
    rb = multiply_by_quantized_multiplier_smaller_than_one(sb, p.b_mult, p.b_shift)
    raw = multiply_by_quantized_multiplier_smaller_than_one(ra + rb, p.out_mult, p.out_shift)
    return np.clip(raw + p.out_offset, p.act_min, p.act_max).astype(np.int8)


macs = base.elementwise_macs
c_scratch_bytes = base.no_scratch
in_place = base.elementwise_in_place


def check_c(graph: BlockGraph, op: Op, params: AddParams) -> None:
    """``ctxconv_add_s8`` repeats the second operand (a trailing block) along the first."""
    a, b = (base.tensor(graph, op, i) for i in params.order)
    out = base.output(graph, op)
    base.check_trailing_block("ADD", a, b, out)
    if params.n % params.b_n:
        raise ValueError(f"ADD operand {b.shape} does not tile {out.shape}")
