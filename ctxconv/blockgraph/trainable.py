"""Which int8 blocks the generated C library can train in place, and the state it trains.

A trainable block is the context-free block of ``BlockGeometry``: [MAX_POOL_2D] ->
CONV_2D (stride 1, SAME, ReLU) -> [AVERAGE_POOL_2D] -> RESHAPE -> FULLY_CONNECTED with
class scores. Its training state is the int8 weights in place plus float32 scales and
biases (``training_state``); after a step the device turns that state back into the
inference parameters with one rule (``with_state``: the int32 biases rounded from the
float biases in double, the multipliers by the ops' own ``prepare``), so the C library
and the simulator infer with bit-identical parameters after every step.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from ctxconv.blockgraph.fixedpoint import round_half_away
from ctxconv.blockgraph.ir import BlockGraph, ModelFileError, Quant

F32 = np.float32
#: The op sequences of a trainable block (an optional pool before, an optional grid after).
TRAINABLE_OPS = (
    ("CONV_2D", "RESHAPE", "FULLY_CONNECTED"),
    ("CONV_2D", "AVERAGE_POOL_2D", "RESHAPE", "FULLY_CONNECTED"),
    ("MAX_POOL_2D", "CONV_2D", "RESHAPE", "FULLY_CONNECTED"),
    ("MAX_POOL_2D", "CONV_2D", "AVERAGE_POOL_2D", "RESHAPE", "FULLY_CONNECTED"),
)
STATE_NAMES = ("conv_q", "conv_s", "conv_b", "head_q", "head_s", "head_b")
_INT32 = (-(1 << 31), (1 << 31) - 1)


def untrainable_reason(block: dict[str, Any], graph: BlockGraph) -> str | None:
    """Why the C library cannot train this block, or None when it can."""
    if block.get("contextual"):
        return ("contextual: the one-hot context enters its convolution, and the C step "
                "trains context-free blocks (softmax over the class scores)")
    if "scores" not in graph.outputs:
        return "energy goodness (one value per pass): the C step trains class-score heads"
    kinds = tuple(op.kind for op in graph.ops)
    if kinds not in TRAINABLE_OPS:
        return (f"ops {' -> '.join(kinds)}: the C step trains [MAX_POOL_2D] -> CONV_2D -> "
                "[AVERAGE_POOL_2D] -> RESHAPE -> FULLY_CONNECTED")
    conv = next(op for op in graph.ops if op.kind == "CONV_2D")
    if (tuple(conv.options.get("stride", ())) != (1, 1) or conv.options.get("padding") != "SAME"
            or not conv.options.get("relu")):
        return "its convolution is not stride 1, SAME padding, ReLU"
    for name in ("conv_weight", "conv_bias", "head_weight", "head_bias"):
        t = graph.tensors.get(name)
        if t is None or t.data is None or t.quant is None:
            return f"it has no quantized constant {name!r}"
    return None


def scale_of(graph: BlockGraph, name: str) -> float:
    """The float32 per-tensor scale of tensor ``name``."""
    t = graph.tensors[name]
    if t.quant is None:
        raise ModelFileError(f"{graph.name}: tensor {name!r} is not quantized")
    return float(F32(t.quant.scale[0]))


def training_state(graph: BlockGraph) -> dict[str, np.ndarray]:
    """The block's int8 weights (rows) and float32 scales and biases."""
    def const(name: str) -> tuple[np.ndarray, np.ndarray]:
        t = graph.tensors.get(name)
        if t is None or t.data is None or t.quant is None:
            raise ModelFileError(f"block graph {graph.name!r} has no quantized {name!r}")
        return t.data, np.asarray(t.quant.scale, F32)

    cw, cs = const("conv_weight")
    cb, cbs = const("conv_bias")
    hw, hs = const("head_weight")
    hb, hbs = const("head_bias")
    return {"conv_q": cw.reshape(len(cw), -1).astype(np.int8), "conv_s": cs.copy(),
            "conv_b": (cb * cbs).astype(F32), "head_q": hw.reshape(len(hw), -1).astype(np.int8),
            "head_s": hs.copy(), "head_b": (hb * hbs).astype(F32)}


def device_bias(bias: np.ndarray, in_scale: float, w_scale: np.ndarray) -> np.ndarray:
    """int32 bias = round_half_away(b / (s_in * s_w)) in double, clamped to int32: the
    rule the C library applies after each step (``ctxconv_train.c``)."""
    s_in = float(F32(in_scale))
    out = [min(max(round_half_away(float(F32(b)) / (s_in * float(F32(s)))), _INT32[0]),
               _INT32[1]) for b, s in zip(np.asarray(bias), np.asarray(w_scale), strict=True)]
    return np.array(out, np.int64).astype(np.int32)


def _grid_input(graph: BlockGraph) -> str:
    return next(op for op in graph.ops if op.kind == "FULLY_CONNECTED").inputs[0]


def with_state(graph: BlockGraph, state: dict[str, np.ndarray],
               parts: tuple[str, ...] = ("conv", "head")) -> BlockGraph:
    """A copy of ``graph`` whose constants carry the trained state (what the device infers
    with after a step). ``parts``: what the device rebuilt (a head-only update leaves the
    conv's parameters as exported)."""
    g = copy.deepcopy(graph)
    conv_in = next(op for op in g.ops if op.kind == "CONV_2D").inputs[0]
    s_in, s_grid = scale_of(g, conv_in), scale_of(g, _grid_input(g))
    for part, s_x in (("conv", s_in), ("head", s_grid)):
        if part not in parts:
            continue
        w, t = g.tensors[f"{part}_weight"], g.tensors[f"{part}_bias"]
        s = np.asarray(state[f"{part}_s"], F32)
        w.data = np.asarray(state[f"{part}_q"], np.int8).reshape(w.shape)
        w.quant = Quant(s.copy(), np.zeros(len(s), np.int64), w.quant.axis)
        b = state[f"{part}_b"]
        t.data = device_bias(b, s_x, s)
        t.quant = Quant((F32(s_x) * s).astype(F32), np.zeros(len(s), np.int64), 0)
    return g
