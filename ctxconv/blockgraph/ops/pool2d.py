"""MAX_POOL_2D and AVERAGE_POOL_2D: checks, run-time parameters, numpy reference, work.

int8: reference_integer_ops::MaxPool / AveragePool on raw int8 values (input and output
share their quantization); ``ctxconv_max_pool_s8`` / ``ctxconv_avg_pool_s8`` read the
same ``PoolParams``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ctxconv.blockgraph.ir import BlockGraph, Op
from ctxconv.blockgraph.ops import base
from ctxconv.blockgraph.ops.kernels import relu_float, valid_counts, window_padding, windows

#: op kind -> the options it reads: filter (h, w), stride (h, w), padding "VALID"|"SAME"
KINDS = {"MAX_POOL_2D": ("filter", "stride", "padding"),
         "AVERAGE_POOL_2D": ("filter", "stride", "padding")}
#: Two operands broadcast against each other (the interpreter aligns their ranks).
BROADCASTS = False
#: The MCU cost-model field (``McuProfile.cost``) charged per unit of ``macs``.
COST_FIELD = "pool_cycles_per_element"
#: TFLM's persistent bytes: TfLitePoolParams and OpDataPooling.
TFLM_BUILTIN_BYTES = 48
TFLM_OP_DATA_BYTES = 32
#: The C kernel of each kind.
C_FUNCTIONS = {"MAX_POOL_2D": "ctxconv_max_pool_s8",
               "AVERAGE_POOL_2D": "ctxconv_avg_pool_s8"}


@dataclass(frozen=True, eq=False)
class PoolParams:
    """int8 pooling parameters (``ctxconv_pool_params``); ``kind`` picks max or average."""

    C_STRUCT: ClassVar[str] = "ctxconv_pool_params"
    in_h: int
    in_w: int
    channels: int
    out_h: int
    out_w: int
    f_h: int
    f_w: int
    stride_h: int
    stride_w: int
    pad_top: int
    pad_left: int
    act_min: int
    act_max: int
    kind: str = base.host()


@dataclass(frozen=True, eq=False)
class PoolFloatParams:
    """float32 pooling parameters."""

    kind: str
    filt: tuple[int, int]
    stride: tuple[int, int]
    pad: tuple[int, int]
    out: tuple[int, int]
    relu: bool


def _geometry(graph: BlockGraph, op: Op) -> tuple[tuple[int, int], tuple[int, int],
                                                   tuple[int, int], tuple[int, int]]:
    """(filter, stride, (pad_top, pad_left), (out_h, out_w)), the output shape checked."""
    what = base.describe(graph, op)
    x, out = base.tensor(graph, op, 0), base.output(graph, op)
    if len(x.shape) != 4:
        raise ValueError(f"{what}: input must be 4-D NHWC, got {x.shape}")
    filt = base.pair(op.options["filter"], f"{what} filter")
    stride = base.pair(op.options["stride"], f"{what} stride")
    pad = str(op.options["padding"])
    oh, top = window_padding(x.shape[1], filt[0], stride[0], pad)
    ow, left = window_padding(x.shape[2], filt[1], stride[1], pad)
    if tuple(out.shape) != (x.shape[0], oh, ow, x.shape[3]):
        raise ValueError(f"{what}: output {out.shape} does not match input {x.shape}, "
                         f"filter {filt}, stride {stride} and {pad} padding")
    return filt, stride, (top, left), (oh, ow)


def validate(graph: BlockGraph, op: Op) -> None:
    """A 4-D input and the output shape its window gives."""
    _geometry(graph, op)


def prepare(graph: BlockGraph, op: Op) -> PoolParams | PoolFloatParams:
    """The op's run-time parameters (TFLM's PoolingPrepare)."""
    x = base.tensor(graph, op, 0)
    filt, stride, pad, out = _geometry(graph, op)
    if not base.is_int8(graph, op):
        return PoolFloatParams(op.kind, filt, stride, pad, out, base.relu(op))
    lo, hi = base.act_range(graph, op)
    return PoolParams(in_h=x.shape[1], in_w=x.shape[2], channels=x.shape[3], out_h=out[0],
                      out_w=out[1], f_h=filt[0], f_w=filt[1], stride_h=stride[0],
                      stride_w=stride[1], pad_top=pad[0], pad_left=pad[1], act_min=lo,
                      act_max=hi, kind=op.kind)


def _counts(h: int, w: int, filt: tuple[int, int], stride: tuple[int, int],
            pad: tuple[int, int], out: tuple[int, int]) -> np.ndarray:
    """In-bounds taps of every output pixel: (1, Ho, Wo, 1)."""
    return np.multiply.outer(valid_counts(h, filt[0], stride[0], pad[0], out[0]),
                             valid_counts(w, filt[1], stride[1], pad[1], out[1]))[None, :, :, None]


def reference(p: PoolParams | PoolFloatParams, inputs: list[np.ndarray]) -> np.ndarray:
    """The op on a batch: (N, H, W, C) -> (N, Ho, Wo, C)."""
    x = inputs[0]
    if isinstance(p, PoolFloatParams):
        xf = x.astype(np.float32)
        if p.kind == "MAX_POOL_2D":
            out = windows(xf, p.filt, p.stride, p.pad, p.out, -np.inf).max(axis=(-2, -1))
        else:
            total = windows(xf, p.filt, p.stride, p.pad, p.out, 0.0).sum(axis=(-2, -1))
            count = _counts(x.shape[1], x.shape[2], p.filt, p.stride, p.pad, p.out)
            out = (total / count).astype(np.float32)
        return relu_float(out, p.relu)
    filt, stride = (p.f_h, p.f_w), (p.stride_h, p.stride_w)
    pad, out_hw = (p.pad_top, p.pad_left), (p.out_h, p.out_w)
    if p.kind == "MAX_POOL_2D":  # max over in-bounds taps, then clamp
        out = windows(x.astype(np.int16), filt, stride, pad, out_hw, -32768).max(axis=(-2, -1))
        return np.clip(out, p.act_min, p.act_max).astype(np.int8)
    # sum of in-bounds taps / their count, rounded half away from zero
    # (``acc > 0 ? (acc + n/2) / n : (acc - n/2) / n`` with C truncating division)
    acc = windows(x.astype(np.int32), filt, stride, pad, out_hw, 0).sum(axis=(-2, -1),
                                                                        dtype=np.int64)
    count = _counts(p.in_h, p.in_w, filt, stride, pad, out_hw)
    num = np.where(acc > 0, acc + count // 2, acc - count // 2)
    out = np.sign(num) * (np.abs(num) // count)
    return np.clip(out, p.act_min, p.act_max).astype(np.int8)


def macs(graph: BlockGraph, op: Op) -> int:
    """Input taps: Ho * Wo * C * fh * fw."""
    fh, fw = op.options["filter"]
    return base.elements(base.output(graph, op).shape) * int(fh) * int(fw)


c_scratch_bytes = base.no_scratch


def in_place(graph: BlockGraph, op: Op) -> bool:
    """With VALID padding output pixel i is written after every tap it reads (C kernels)."""
    return op.options["padding"] == "VALID"


def check_c(graph: BlockGraph, op: Op, params: PoolParams) -> None:
    """The C kernels pool raw values: the output keeps the input's quantization."""
    x, out = base.tensor(graph, op, 0), base.output(graph, op)
    if (base.scale(x, op.kind), base.zero_point(x)) != (base.scale(out, op.kind),
                                                       base.zero_point(out)):
        raise ValueError(f"{op.kind} must keep its input's quantization")


def optimized_scratch(graph: BlockGraph, op: Op, model: Any) -> int:
    """Scratch an optimised kernel library (the profile's ``ScratchModel``) requests: the
    average pool's per-channel accumulators; none for max pooling."""
    if op.kind != "AVERAGE_POOL_2D":
        return 0
    return int(model.avgpool_bytes_per_channel * base.tensor(graph, op, 0).shape[-1])
