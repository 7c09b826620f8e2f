"""FULLY_CONNECTED: checks, run-time parameters, numpy reference, work.

int8: reference_integer_ops::FullyConnected with symmetric weights. ``prepare`` folds the
input offset into the bias (``bias + in_offset * sum(W row)``, wrapped to int32 as the
device adds), so both the numpy reference and ``ctxconv_fc_s8`` compute the plain
``W x + bias`` on the raw int8 input; int32 arithmetic is modular, so the result equals
TFLM's ``sum (x - zp) w + bias`` bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ctxconv.blockgraph.fixedpoint import channel_multipliers, wrap_int32
from ctxconv.blockgraph.ir import BlockGraph, Op
from ctxconv.blockgraph.ops import base
from ctxconv.blockgraph.ops.kernels import acc_bound, exact_int_matmul, relu_float, requantize

#: op kind -> the options it reads; inputs: x (1, N), weight (K, N), bias (int32)
KINDS = {"FULLY_CONNECTED": ("relu",)}
#: Two operands broadcast against each other (the interpreter aligns their ranks).
BROADCASTS = False
#: The MCU cost-model field (``McuProfile.cost``) charged per unit of ``macs``.
COST_FIELD = "fc_cycles_per_mac"
#: TFLM's persistent bytes: TfLiteFullyConnectedParams and OpDataFullyConnected.
TFLM_BUILTIN_BYTES = 32
TFLM_OP_DATA_BYTES = 72
#: The C kernel.
C_FUNCTIONS = {"FULLY_CONNECTED": "ctxconv_fc_s8"}


@dataclass(frozen=True, eq=False)
class FcParams:
    """int8 FULLY_CONNECTED parameters (``ctxconv_fc_params``)."""

    C_STRUCT: ClassVar[str] = "ctxconv_fc_params"
    in_n: int
    out_n: int
    out_offset: int  # the output zero point
    act_min: int
    act_max: int
    weights: np.ndarray  # (out_n, in_n) int8, symmetric
    bias: np.ndarray  # (out_n,) int32, the input offset folded in
    mult: np.ndarray  # (out_n,)
    shift: np.ndarray  # (out_n,)


@dataclass(frozen=True, eq=False)
class FcFloatParams:
    """float32 FULLY_CONNECTED parameters."""

    weights: np.ndarray
    bias: np.ndarray | None
    relu: bool


def validate(graph: BlockGraph, op: Op) -> None:
    """Constant (out, in) weights, an input of ``in`` elements, a per-row bias."""
    what = base.describe(graph, op)
    x, out = base.tensor(graph, op, 0), base.output(graph, op)
    wd, bd = base.weights_bias(graph, op)
    if wd.ndim != 2 or base.elements(x.shape) != wd.shape[1]:
        raise ValueError(f"{what}: input {x.shape} and weights {wd.shape} mismatch")
    if bd is not None and tuple(bd.shape) != (wd.shape[0],):
        raise ValueError(f"{what}: bias must have shape ({wd.shape[0]},)")
    if base.elements(out.shape) != wd.shape[0]:
        raise ValueError(f"{what}: output {out.shape} is not {wd.shape[0]} long")
    if base.is_int8(graph, op):
        base.check_symmetric_weights(graph, op)


def prepare(graph: BlockGraph, op: Op) -> FcParams | FcFloatParams:
    """The op's run-time parameters (TFLM's FullyConnectedPrepare, the offset folded)."""
    x, out = base.tensor(graph, op, 0), base.output(graph, op)
    wd, bd = base.weights_bias(graph, op)
    if not base.is_int8(graph, op):
        return FcFloatParams(wd, bd, base.relu(op))
    n_out, n_in = wd.shape
    mult, shift = channel_multipliers(x.quant, base.tensor(graph, op, 1).quant, out.quant,
                                      n_out, base.describe(graph, op))
    bias = np.zeros(n_out, np.int64) if bd is None else bd.astype(np.int64)
    folded = wrap_int32(bias - base.zero_point(x) * wd.astype(np.int64).sum(axis=1))
    lo, hi = base.act_range(graph, op)
    return FcParams(in_n=n_in, out_n=n_out, out_offset=base.zero_point(out), act_min=lo,
                    act_max=hi, weights=wd, bias=folded.astype(np.int32), mult=mult,
                    shift=shift)


def reference(p: FcParams | FcFloatParams, inputs: list[np.ndarray]) -> np.ndarray:
    """The op on a batch: inputs[0] (N, ...) flattened to (N, in) -> (N, out)."""
    if isinstance(p, FcFloatParams):
        x = inputs[0].reshape(-1, p.weights.shape[1]).astype(np.float32)
        out = x @ p.weights.T.astype(np.float32)
        if p.bias is not None:
            out = out + p.bias.astype(np.float32)
        return relu_float(out, p.relu)
    x = inputs[0].reshape(-1, p.in_n).astype(np.int16)
    wt = p.weights.astype(np.int16).T
    amax = int(np.abs(x).max(initial=0))
    acc = exact_int_matmul(x, wt, amax) + p.bias.astype(np.int64)  # (N, out)
    # the bound covers the folded bias: any sum beyond int32 is wrapped, as on the device
    return requantize(acc, p.mult, p.shift, p.out_offset, (p.act_min, p.act_max),
                      acc_bound(amax, wt, p.bias))


def macs(graph: BlockGraph, op: Op) -> int:
    """Din * Dout."""
    return base.elements(base.tensor(graph, op, 1).shape)


c_scratch_bytes = base.no_scratch


def in_place(graph: BlockGraph, op: Op) -> bool:
    """Every output reads the whole input: never in place."""
    return False


def check_c(graph: BlockGraph, op: Op, params: FcParams) -> None:
    """What ``ctxconv_fc_s8`` cannot express: an accumulator beyond int32."""
    base.check_int32_accumulator(graph, op)
