"""CONV_2D: checks, run-time parameters, numpy reference, work, scratch.

int8: reference_integer_ops::ConvPerChannel (TFLM's conv.h OpData: per-channel
multipliers and shifts, offsets, activation range, padding). The C kernel
``ctxconv_conv_s8`` reads the same ``ConvParams``; only the weights' byte layout differs
(the C writer pads each row to ``k_padded`` and interleaves channel pairs, see
``ctxconv_kernels.h``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ctxconv.blockgraph.fixedpoint import channel_multipliers
from ctxconv.blockgraph.ir import BlockGraph, Op
from ctxconv.blockgraph.ops import base
from ctxconv.blockgraph.ops.kernels import (
    acc_bound,
    exact_int_matmul,
    relu_float,
    requantize,
    window_padding,
    windows,
)

#: op kind -> the options it reads; inputs: x, weight (OHWI), bias (int32)
KINDS = {"CONV_2D": ("stride", "padding", "relu")}
#: Two operands broadcast against each other (the interpreter aligns their ranks).
BROADCASTS = False
#: The MCU cost-model field (``McuProfile.cost``) charged per unit of ``macs``.
COST_FIELD = "conv_cycles_per_mac"
#: TFLM's persistent bytes for the op: TfLiteConvParams and the kernel's OpDataConv.
TFLM_BUILTIN_BYTES = 32
TFLM_OP_DATA_BYTES = 80
#: The C kernel, and the type of the scratch it takes.
C_FUNCTIONS = {"CONV_2D": "ctxconv_conv_s8"}
C_SCRATCH_TYPE = "int16_t"


@dataclass(frozen=True, eq=False)
class ConvParams:
    """int8 CONV_2D parameters (``ctxconv_conv_params``)."""

    C_STRUCT: ClassVar[str] = "ctxconv_conv_params"
    in_h: int
    in_w: int
    in_c: int
    out_h: int
    out_w: int
    out_c: int
    k_h: int
    k_w: int
    stride_h: int
    stride_w: int
    pad_top: int
    pad_left: int
    k_padded: int  # k_h * k_w * in_c rounded up to a multiple of 4 (the C weight rows)
    in_offset: int  # minus the input zero point
    out_offset: int  # the output zero point
    act_min: int
    act_max: int
    weights: np.ndarray  # (out_c, k_h, k_w, in_c) int8, symmetric
    bias: np.ndarray  # (out_c,) int32 (zeros without a bias)
    mult: np.ndarray  # (out_c,) QuantizeMultiplier(in_scale * w_scale[c] / out_scale)
    shift: np.ndarray  # (out_c,)


@dataclass(frozen=True, eq=False)
class ConvFloatParams:
    """float32 CONV_2D parameters."""

    weights: np.ndarray
    bias: np.ndarray | None
    stride: tuple[int, int]
    pad: tuple[int, int]  # (top, left)
    out: tuple[int, int]
    relu: bool


def k_padded(graph: BlockGraph, op: Op) -> int:
    """k_h * k_w * in_c of the weight, rounded up to a multiple of 4."""
    _, kh, kw, cin = base.tensor(graph, op, 1).shape
    return (kh * kw * cin + 3) // 4 * 4


def _geometry(graph: BlockGraph, op: Op) -> tuple[tuple[int, int], tuple[int, int],
                                                   tuple[int, int]]:
    """(stride, (pad_top, pad_left), (out_h, out_w)) of the op, its output shape checked."""
    what = base.describe(graph, op)
    x, w, out = base.tensor(graph, op, 0), base.tensor(graph, op, 1), base.output(graph, op)
    stride = base.pair(op.options["stride"], f"{what} stride")
    pad = str(op.options["padding"])
    oh, top = window_padding(x.shape[1], w.shape[1], stride[0], pad)
    ow, left = window_padding(x.shape[2], w.shape[2], stride[1], pad)
    if tuple(out.shape) != (x.shape[0], oh, ow, w.shape[0]):
        raise ValueError(f"{what}: output {out.shape} does not match input {x.shape}, "
                         f"filter {w.shape}, stride {stride} and {pad} padding")
    return stride, (top, left), (oh, ow)


def validate(graph: BlockGraph, op: Op) -> None:
    """Constant OHWI weights matching the NHWC input, a per-channel bias, the output shape."""
    what = base.describe(graph, op)
    x, w = base.tensor(graph, op, 0), base.tensor(graph, op, 1)
    wd, bd = base.weights_bias(graph, op)
    if len(x.shape) != 4 or len(w.shape) != 4 or x.shape[3] != w.shape[3]:
        raise ValueError(f"{what}: input {x.shape} and filter {w.shape} do not match")
    if bd is not None and tuple(bd.shape) != (w.shape[0],):
        raise ValueError(f"{what}: bias must have shape ({w.shape[0]},)")
    _geometry(graph, op)
    if base.is_int8(graph, op):
        base.check_symmetric_weights(graph, op)


def prepare(graph: BlockGraph, op: Op) -> ConvParams | ConvFloatParams:
    """The op's run-time parameters (TFLM's ConvPrepare)."""
    x, out = base.tensor(graph, op, 0), base.output(graph, op)
    wd, bd = base.weights_bias(graph, op)
    stride, pad, (oh, ow) = _geometry(graph, op)
    if not base.is_int8(graph, op):
        return ConvFloatParams(wd, bd, stride, pad, (oh, ow), base.relu(op))
    cout, kh, kw, cin = wd.shape
    mult, shift = channel_multipliers(x.quant, base.tensor(graph, op, 1).quant, out.quant,
                                      cout, base.describe(graph, op))
    lo, hi = base.act_range(graph, op)
    bias = np.zeros(cout, np.int32) if bd is None else bd.astype(np.int32)
    return ConvParams(
        in_h=x.shape[1], in_w=x.shape[2], in_c=cin, out_h=oh, out_w=ow, out_c=cout,
        k_h=kh, k_w=kw, stride_h=stride[0], stride_w=stride[1], pad_top=pad[0],
        pad_left=pad[1], k_padded=k_padded(graph, op), in_offset=-base.zero_point(x),
        out_offset=base.zero_point(out), act_min=lo, act_max=hi, weights=wd, bias=bias,
        mult=mult, shift=shift)


def reference(p: ConvParams | ConvFloatParams, inputs: list[np.ndarray]) -> np.ndarray:
    """The op on a batch: inputs[0] (N, H, W, Cin) -> (N, Ho, Wo, Cout)."""
    if isinstance(p, ConvFloatParams):
        return _conv_float(inputs[0], p)
    return _conv_int8(inputs[0], p)


def _conv_int8(x: np.ndarray, p: ConvParams) -> np.ndarray:
    """reference_integer_ops::ConvPerChannel on a batch; padded taps read the zero point."""
    cout, kh, kw, cin = p.weights.shape
    xs = x.astype(np.float32) + np.float32(p.in_offset)  # integers |v| <= 255
    amax = int(np.abs(xs).max(initial=0))
    win = windows(xs, (kh, kw), (p.stride_h, p.stride_w), (p.pad_top, p.pad_left),
                  (p.out_h, p.out_w), 0.0)  # (N, Ho, Wo, Cin, kh, kw)
    n, ho, wo = win.shape[:3]
    cols = win.transpose(0, 1, 2, 4, 5, 3).reshape(n * ho * wo, kh * kw * cin)
    wmat = p.weights.reshape(cout, -1).T  # (kh*kw*Cin, Cout)
    acc = exact_int_matmul(cols, wmat, amax)  # (N*Ho*Wo, Cout)
    bound = acc_bound(amax, wmat, p.bias)
    acc += p.bias.astype(np.int64)
    out = requantize(acc, p.mult, p.shift, p.out_offset, (p.act_min, p.act_max), bound)
    return out.reshape(n, ho, wo, cout)


def _conv_float(x: np.ndarray, p: ConvFloatParams) -> np.ndarray:
    """Float conv: x (N, H, W, Cin), weight (Cout, kh, kw, Cin) -> (N, Ho, Wo, Cout)."""
    cout, kh, kw, cin = p.weights.shape
    win = windows(x.astype(np.float32), (kh, kw), p.stride, p.pad, p.out, 0.0)
    n, ho, wo = win.shape[:3]
    cols = win.transpose(0, 1, 2, 4, 5, 3).reshape(n * ho * wo, kh * kw * cin)
    out = cols @ p.weights.reshape(cout, -1).T.astype(np.float32)
    if p.bias is not None:
        out = out + p.bias.astype(np.float32)
    return relu_float(out.reshape(n, ho, wo, cout), p.relu)


def macs(graph: BlockGraph, op: Op) -> int:
    """Ho * Wo * Cout * kh * kw * Cin."""
    _, kh, kw, cin = base.tensor(graph, op, 1).shape
    return base.elements(base.output(graph, op).shape) * kh * kw * cin


def c_scratch_bytes(graph: BlockGraph, op: Op) -> int:
    """The C kernel's im2col scratch: two int16 columns of ``k_padded``."""
    return 2 * 2 * k_padded(graph, op)


def in_place(graph: BlockGraph, op: Op) -> bool:
    """A conv never overwrites its input (every output pixel reads a window of it)."""
    return False


def check_c(graph: BlockGraph, op: Op, params: ConvParams) -> None:
    """What ``ctxconv_conv_s8`` cannot express: an accumulator beyond int32."""
    base.check_int32_accumulator(graph, op)


def optimized_scratch(graph: BlockGraph, op: Op, model: Any) -> int:
    """Scratch an optimised kernel library (CMSIS-NN-like, the profile's ``ScratchModel``)
    requests: bytes per im2col tap (none for a 1x1 stride-1 conv) and input / filter
    copies."""
    x, w = base.tensor(graph, op, 0), base.tensor(graph, op, 1)
    _, kh, kw, cin = w.shape
    one_by_one = (kh, kw) == (1, 1) and tuple(op.options["stride"]) == (1, 1)
    taps = 0 if one_by_one else model.conv_bytes_per_tap * kh * kw * cin
    return int(taps + model.conv_input_copy * x.nbytes + model.conv_filter_copy * w.nbytes)
