"""Small block graphs for tests, built in code, plus a numpy float reference.

``tiny_block_graph`` builds a float graph with random weights, calibrates every
activation's int8 range on random inputs with ``float_forward`` and quantizes it the
way the exporter does (per-channel symmetric conv weights, int32 biases with
scale = input_scale * weight_scale). Imports only numpy and ``ctxconv.blockgraph.ir``.
"""

from __future__ import annotations

import math

import numpy as np

from ctxconv.blockgraph.ir import BlockGraph, Op, Quant, Tensor

# --------------------------------------------------------------------------- float reference


def _pads(size: int, k: int, s: int, padding: str) -> tuple[int, int, int]:
    """(pad_before, pad_after, out_size) of one axis, TF semantics."""
    if padding == "VALID":
        return 0, 0, (size - k) // s + 1
    out = math.ceil(size / s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2, out


def _windows(x: np.ndarray, k: tuple[int, int], s: tuple[int, int], padding: str, fill: float):
    """Yield (kh, kw, patch) with patch (N, OH, OW, C) taken from the padded x (N, H, W, C)."""
    n, h, w, c = x.shape
    th, bh, oh = _pads(h, k[0], s[0], padding)
    tw, bw, ow = _pads(w, k[1], s[1], padding)
    xp = np.pad(x, ((0, 0), (th, bh), (tw, bw), (0, 0)), constant_values=fill)
    for i in range(k[0]):
        for j in range(k[1]):
            rows = slice(i, i + s[0] * (oh - 1) + 1, s[0])
            cols = slice(j, j + s[1] * (ow - 1) + 1, s[1])
            yield i, j, xp[:, rows, cols]


def _conv(x, w, b, stride, padding):
    # x (N, H, W, C), w (O, KH, KW, C), b (O,) -> (N, OH, OW, O)
    out = 0.0
    for i, j, patch in _windows(x, w.shape[1:3], stride, padding, 0.0):
        out = out + np.einsum("nhwc,oc->nhwo", patch, w[:, i, j, :])
    return out + b


def _pool(x, kind, filt, stride, padding):
    if kind == "MAX_POOL_2D":
        return np.max(np.stack([p for *_, p in _windows(x, filt, stride, padding, -np.inf)]), 0)
    total = sum(p for *_, p in _windows(x, filt, stride, padding, 0.0))
    count = sum(p for *_, p in _windows(np.ones_like(x[:1]), filt, stride, padding, 0.0))
    return total / count


def float_forward(graph: BlockGraph, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Evaluate a float32 graph in float64 on a batch; returns every tensor by name.

    Inputs have a leading batch dim N; tensors keep it (RESHAPE keeps dim 0 as N).
    """
    vals: dict[str, np.ndarray] = {k: np.asarray(v, np.float64) for k, v in inputs.items()}
    for t in graph.constants():
        vals[t.name] = np.asarray(t.data, np.float64)
    for op in graph.ops:
        x = vals[op.inputs[0]]
        o = op.options
        if op.kind == "CONV_2D":
            y = _conv(x, vals[op.inputs[1]], vals[op.inputs[2]], o["stride"], o["padding"])
        elif op.kind in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
            y = _pool(x, op.kind, o["filter"], o["stride"], o["padding"])
        elif op.kind == "FULLY_CONNECTED":
            w = vals[op.inputs[1]]
            y = x.reshape(-1, w.shape[1]) @ w.T + vals[op.inputs[2]]
        elif op.kind == "ADD":
            y = x + vals[op.inputs[1]]
        elif op.kind == "RESHAPE":
            y = x.reshape((x.shape[0], *tuple(o["shape"])[1:]))
        else:
            raise ValueError(op.kind)
        if o.get("relu", False):
            y = np.maximum(y, 0.0)
        vals[op.outputs[0]] = y
    return vals


# --------------------------------------------------------------------------- quantization


def dequantize(t: Tensor, q: np.ndarray | None = None) -> np.ndarray:
    """Real values of an int tensor (``q`` defaults to its constant data)."""
    data = np.asarray(t.data if q is None else q, np.float64)
    assert t.quant is not None
    shape = [1] * data.ndim
    if t.quant.axis is not None:
        shape[t.quant.axis] = -1
    scale = np.asarray(t.quant.scale, np.float64).reshape(shape)
    zp = np.asarray(t.quant.zero_point, np.float64).reshape(shape)
    return scale * (data - zp)


def quantize(x: np.ndarray, quant: Quant) -> np.ndarray:
    """Per-tensor int8 quantization (round half to even, saturating)."""
    q = np.round(np.asarray(x, np.float64) / quant.scale[0]) + quant.zero_point[0]
    return np.clip(q, -128, 127).astype(np.int8)


def range_quant(lo: float, hi: float) -> Quant:
    """Asymmetric int8 parameters covering [lo, hi] (always including 0)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    scale = max(hi - lo, 1e-6) / 255.0
    zp = int(np.clip(round(-128 - lo / scale), -128, 127))
    return Quant.per_tensor(scale, zp)


def _weight_quant(w: np.ndarray, per_channel: bool) -> tuple[np.ndarray, Quant]:
    axes = tuple(range(1, w.ndim))
    amax = np.max(np.abs(w), axis=axes) if per_channel else np.array([np.max(np.abs(w))])
    scale = np.maximum(amax, 1e-8).astype(np.float32) / np.float32(127)
    shape = (-1,) + (1,) * (w.ndim - 1) if per_channel else (1,) * w.ndim
    q = np.clip(np.round(w / scale.reshape(shape)), -127, 127).astype(np.int8)
    quant = Quant(scale, np.zeros(scale.shape, np.int64), 0 if per_channel else None)
    return q, quant


def quantize_graph(
    graph: BlockGraph,
    calib: dict[str, np.ndarray],
    fc_per_channel: bool = False,
) -> BlockGraph:
    """Int8 copy of a float graph: activations calibrated on ``calib`` (min/max).

    Pools and RESHAPE reuse their input's parameters (TFLite requires it);
    conv weights are per-channel, FC weights per-tensor unless ``fc_per_channel``.
    """
    vals = float_forward(graph, calib)
    quants: dict[str, Quant] = {}
    for name in graph.inputs:
        quants[name] = range_quant(vals[name].min(), vals[name].max())
    tensors: dict[str, Tensor] = {}
    for op in graph.ops:
        out = op.outputs[0]
        if op.kind in ("MAX_POOL_2D", "AVERAGE_POOL_2D", "RESHAPE"):
            quants[out] = quants[op.inputs[0]]
        else:
            quants[out] = range_quant(vals[out].min(), vals[out].max())
        if op.kind in ("CONV_2D", "FULLY_CONNECTED"):
            x, w, b = (graph.tensors[n] for n in op.inputs)
            per_channel = op.kind == "CONV_2D" or fc_per_channel
            wq, wquant = _weight_quant(np.asarray(w.data, np.float64), per_channel)
            tensors[w.name] = Tensor(w.name, w.shape, "int8", wquant, wq)
            bscale = (np.float32(quants[x.name].scale[0]) * wquant.scale).astype(np.float32)
            bscale = np.broadcast_to(bscale, b.shape).copy()
            bq = np.round(np.asarray(b.data, np.float64) / bscale).astype(np.int32)
            bquant = Quant(bscale, np.zeros(bscale.shape, np.int64), 0)
            tensors[b.name] = Tensor(b.name, b.shape, "int32", bquant, bq)
        elif op.kind == "ADD" and graph.tensors[op.inputs[1]].is_constant:
            c = graph.tensors[op.inputs[1]]
            cq = range_quant(np.min(c.data), np.max(c.data))
            tensors[c.name] = Tensor(c.name, c.shape, "int8", cq, quantize(c.data, cq))
    for t in graph.tensors.values():
        if t.name not in tensors:
            tensors[t.name] = Tensor(t.name, t.shape, "int8", quants[t.name])
    ordered = {name: tensors[name] for name in graph.tensors}
    return BlockGraph(graph.name, ordered, list(graph.ops), list(graph.inputs), list(graph.outputs))


def dequantize_graph(graph: BlockGraph) -> BlockGraph:
    """Float32 copy of an int8 graph: constants dequantized, quantization dropped."""
    tensors = {}
    for t in graph.tensors.values():
        data = None if t.data is None else dequantize(t).astype(np.float32)
        tensors[t.name] = Tensor(t.name, t.shape, "float32", None, data)
    return BlockGraph(graph.name, tensors, list(graph.ops), list(graph.inputs), list(graph.outputs))


# --------------------------------------------------------------------------- factories


def tiny_float_graph(
    seed: int,
    with_pool: bool = True,
    contextual_add: bool = False,
    channels: int = 8,
    with_head: bool = True,
) -> BlockGraph:
    """Float graph: input (1,8,8,1) -> [MAX_POOL 2x2] -> CONV 3x3 SAME (+ctx ADD) relu
    -> AVERAGE_POOL 2x2 -> [RESHAPE (1, K) -> FULLY_CONNECTED 10].

    With ``contextual_add`` the conv has no fused relu; its output gets a second graph
    input ``context`` (1,1,1,channels) added by broadcast, with the relu fused in ADD.
    Without ``with_head`` the graph ends at the average pool (output ``avgpool``).
    """
    rng = np.random.default_rng(seed)
    t: dict[str, Tensor] = {}
    ops: list[Op] = []

    def act(name: str, shape: tuple[int, ...]) -> str:
        t[name] = Tensor(name, shape, "float32")
        return name

    def const(name: str, data: np.ndarray) -> str:
        t[name] = Tensor(name, data.shape, "float32", None, data.astype(np.float32))
        return name

    x = act("input", (1, 8, 8, 1))
    size = 8
    if with_pool:
        size = 4
        ops.append(
            Op(
                "MAX_POOL_2D",
                [x],
                [act("maxpool", (1, size, size, 1))],
                {"filter": (2, 2), "stride": (2, 2), "padding": "VALID"},
            )
        )
        x = "maxpool"
    w = rng.normal(0, math.sqrt(2 / 9), (channels, 3, 3, 1))
    b = rng.normal(0, 0.1, channels)
    conv = act("conv", (1, size, size, channels))
    ops.append(
        Op(
            "CONV_2D",
            [x, const("conv_w", w), const("conv_b", b)],
            [conv],
            {"stride": (1, 1), "padding": "SAME", "relu": not contextual_add},
        )
    )
    inputs = ["input"]
    if contextual_add:
        ctx = act("context", (1, 1, 1, channels))
        inputs.append(ctx)
        ops.append(Op("ADD", [conv, ctx], [act("add", (1, size, size, channels))], {"relu": True}))
        conv = "add"
    size //= 2
    pooled = act("avgpool", (1, size, size, channels))
    ops.append(
        Op(
            "AVERAGE_POOL_2D",
            [conv],
            [pooled],
            {"filter": (2, 2), "stride": (2, 2), "padding": "VALID"},
        )
    )
    if not with_head:
        return BlockGraph("tiny_block", t, ops, inputs, [pooled])
    n = size * size * channels
    ops.append(Op("RESHAPE", [pooled], [act("flatten", (1, n))], {"shape": (1, n)}))
    fw = rng.normal(0, math.sqrt(1 / n), (10, n))
    fb = rng.normal(0, 0.1, 10)
    ops.append(
        Op(
            "FULLY_CONNECTED",
            ["flatten", const("fc_w", fw), const("fc_b", fb)],
            [act("logits", (1, 10))],
            {"relu": False},
        )
    )
    return BlockGraph("tiny_block", t, ops, inputs, ["logits"])


def random_float_inputs(graph: BlockGraph, n: int, seed: int) -> dict[str, np.ndarray]:
    """Batch of ``n`` float inputs in [-1, 1] (context in [-0.5, 0.5])."""
    rng = np.random.default_rng(seed)
    out = {}
    for name in graph.inputs:
        amp = 0.5 if name == "context" else 1.0
        shape = (n, *graph.tensors[name].shape[1:])
        out[name] = rng.uniform(-amp, amp, shape).astype(np.float32)
    return out


def random_int8_inputs(graph: BlockGraph, n: int, seed: int) -> dict[str, np.ndarray]:
    """Batch of ``n`` uniformly random int8 inputs."""
    rng = np.random.default_rng(seed)
    return {
        name: rng.integers(-128, 128, (n, *graph.tensors[name].shape[1:]), dtype=np.int8)
        for name in graph.inputs
    }


def tiny_block_graph(
    seed: int,
    with_pool: bool = True,
    contextual_add: bool = False,
    fc_per_channel: bool = False,
    with_head: bool = True,
) -> BlockGraph:
    """Int8 version of ``tiny_float_graph``, calibrated on 64 random inputs.

    Conv weights are per-channel; FC weights per-tensor unless ``fc_per_channel``.
    """
    fgraph = tiny_float_graph(seed, with_pool, contextual_add, with_head=with_head)
    calib = random_float_inputs(fgraph, 64, seed + 1000)
    return quantize_graph(fgraph, calib, fc_per_channel=fc_per_channel)
