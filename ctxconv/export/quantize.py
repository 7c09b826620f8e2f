"""Calibration and full-integer int8 quantization of folded blocks into block graphs.

Weights: symmetric per-output-channel int8 (zero point 0). Biases: int32 with scale
``input_scale * weight_scale``. Activations: asymmetric per-tensor int8 from ranges
observed on training images (min/max or percentiles). Pooling and reshape keep their
input's parameters, as TFLite requires, so block i's output tensor is block i+1's input
with no requantization in between.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ctxconv.blockgraph.ir import BlockGraph, Op, Quant, Tensor
from ctxconv.export.fold import FloatBlock, float_forward

CALIB_METHODS = ("minmax", "percentile")
#: The one-hot context as int8: 0 -> -128, 1 -> 127 exactly.
CONTEXT_QUANT = (1.0 / 255.0, -128)


@dataclass
class Ranges:
    """Observed float ranges of one block's activations."""

    values: dict[str, tuple[float, float]] = field(default_factory=dict)


def _range(x: np.ndarray, method: str, percentile: float) -> tuple[float, float]:
    if method == "minmax":
        return float(x.min()), float(x.max())
    if method == "percentile":
        flat = x.reshape(-1)
        return float(np.percentile(flat, 100 - percentile)), float(np.percentile(flat, percentile))
    raise ValueError(f"unknown calibration method {method!r}; choose one of {CALIB_METHODS}")


def activation_quant(lo: float, hi: float) -> tuple[float, int]:
    """Asymmetric int8 (scale, zero point) covering [lo, hi] and exactly representing 0."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi - lo < 1e-8:
        hi = lo + 1e-8
    scale = (hi - lo) / 255.0
    zero_point = int(np.clip(round(-128 - lo / scale), -128, 127))
    return float(scale), zero_point


def calibrate(blocks: list[FloatBlock], images: np.ndarray, num_classes: int,
              method: str = "minmax", percentile: float = 99.99) -> list[Ranges]:
    """Ranges of every block's activations on ``images`` (N, H, W, C), normalised floats.

    Contextual blocks are calibrated under every candidate context (multipass inputs).
    """
    ranges: list[Ranges] = []
    x = images.astype(np.float64)
    for fb in blocks:
        r = Ranges({"input": _range(x, method, percentile)})
        if fb.contextual:
            n = x.shape[0]
            contexts = np.repeat(np.eye(num_classes), n, axis=0)  # (K*N, K)
            xs = np.concatenate([x] * num_classes)
            features, scores, acts = float_forward(fb, xs, contexts)
            r.values["conv_pre"] = _range(acts["conv_pre"], method, percentile)
            r.values["context_bias"] = _range(fb.context_weight, "minmax", percentile)
            features = features[:n]  # the next block is trained on the context-free prefix
        else:
            features, scores, _ = float_forward(fb, x)
        r.values["features"] = _range(features, method, percentile)
        r.values["scores"] = _range(scores, method, percentile)
        ranges.append(r)
        x = features
    return ranges


def _per_channel_weights(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int8 weights and per-channel scales along axis 0 (symmetric, zero point 0)."""
    absmax = np.abs(w.reshape(w.shape[0], -1)).max(axis=1)
    scale = np.where(absmax > 0, absmax / 127.0, 1e-8)
    shape = (-1,) + (1,) * (w.ndim - 1)
    q = np.clip(np.round(w / scale.reshape(shape)), -127, 127).astype(np.int8)
    return q, scale.astype(np.float32)


class _GraphBuilder:
    def __init__(self, name: str, int8: bool) -> None:
        self.int8 = int8
        self.graph = BlockGraph(name=name, tensors={}, ops=[], inputs=[], outputs=[])

    def activation(self, name: str, shape: tuple[int, ...], quant: tuple[float, int]) -> str:
        q = Quant.per_tensor(*quant) if self.int8 else None
        self.graph.tensors[name] = Tensor(name, shape, "int8" if self.int8 else "float32", q)
        return name

    def weights(self, name: str, w: np.ndarray) -> tuple[str, np.ndarray]:
        """Per-channel int8 weights (or float32); returns (name, per-channel scale)."""
        if not self.int8:
            self.graph.tensors[name] = Tensor(name, w.shape, "float32", None, w.astype(np.float32))
            return name, np.ones(w.shape[0], np.float32)
        q, scale = _per_channel_weights(w)
        quant = Quant(scale, np.zeros(len(scale), np.int64), axis=0)
        self.graph.tensors[name] = Tensor(name, w.shape, "int8", quant, q)
        return name, scale

    def bias(self, name: str, b: np.ndarray, input_scale: float, w_scale: np.ndarray) -> str:
        if not self.int8:
            self.graph.tensors[name] = Tensor(name, b.shape, "float32", None, b.astype(np.float32))
            return name
        scale = (input_scale * w_scale.astype(np.float64)).astype(np.float32)
        q = np.clip(np.round(b / scale), -(2**31), 2**31 - 1).astype(np.int32)
        quant = Quant(scale, np.zeros(len(scale), np.int64), axis=0)
        self.graph.tensors[name] = Tensor(name, b.shape, "int32", quant, q)
        return name

    def shape_const(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return shape

    def op(self, kind: str, inputs: list[str], outputs: list[str], **options) -> None:
        self.graph.ops.append(Op(kind, inputs, outputs, options))


def build_block_graph(fb: FloatBlock, ranges: Ranges, num_classes: int, int8: bool = True
                      ) -> BlockGraph:
    """The int8 (or float) graph of one block: (features_in[, context]) -> (features, scores)."""
    g = _GraphBuilder(f"block{fb.index}", int8)
    cin, cout = fb.in_channels, fb.out_channels
    s_in = activation_quant(*ranges.values["input"])
    x = g.activation("features_in", (1, fb.in_size, fb.in_size, cin), s_in)
    g.graph.inputs.append(x)
    if fb.pool > 1:
        size = fb.out_size
        pooled = g.activation("pooled", (1, size, size, cin), s_in)
        g.op("MAX_POOL_2D", [x], [pooled], filter=(fb.pool, fb.pool),
             stride=(fb.pool, fb.pool), padding="VALID")
        x = pooled
    size = fb.out_size
    s_feat = activation_quant(*ranges.values["features"])
    w_name, w_scale = g.weights("conv_weight", fb.conv_weight.transpose(0, 2, 3, 1))  # OHWI
    b_name = g.bias("conv_bias", fb.conv_bias, s_in[0], w_scale)
    features = "features"
    if fb.contextual:
        ctx = g.activation("context", (1, num_classes), CONTEXT_QUANT)
        g.graph.inputs.append(ctx)
        s_pre = activation_quant(*ranges.values["conv_pre"])
        pre = g.activation("conv_pre", (1, size, size, cout), s_pre)
        g.op("CONV_2D", [x, w_name, b_name], [pre], stride=(1, 1), padding="SAME", relu=False)
        cw_name, cw_scale = g.weights("context_weight", fb.context_weight)  # (O, K)
        cb_name = g.bias("context_weight_bias", np.zeros(cout), CONTEXT_QUANT[0], cw_scale)
        s_cb = activation_quant(*ranges.values["context_bias"])
        cb = g.activation("context_bias", (1, cout), s_cb)
        g.op("FULLY_CONNECTED", [ctx, cw_name, cb_name], [cb], relu=False)
        cb4 = g.activation("context_bias_4d", (1, 1, 1, cout), s_cb)
        g.op("RESHAPE", [cb], [cb4], shape=(1, 1, 1, cout))
        g.activation(features, (1, size, size, cout), s_feat)
        g.op("ADD", [pre, cb4], [features], relu=True)
    else:
        g.activation(features, (1, size, size, cout), s_feat)
        g.op("CONV_2D", [x, w_name, b_name], [features], stride=(1, 1), padding="SAME", relu=True)
    grid_in = features
    if fb.head_cell > 1:
        grid_in = g.activation("grid", (1, fb.head_grid, fb.head_grid, cout), s_feat)
        g.op("AVERAGE_POOL_2D", [features], [grid_in], filter=(fb.head_cell, fb.head_cell),
             stride=(fb.head_cell, fb.head_cell), padding="VALID")
    n_flat = fb.head_grid * fb.head_grid * cout
    flat = g.activation("grid_flat", (1, n_flat), s_feat)
    g.op("RESHAPE", [grid_in], [flat], shape=(1, n_flat))
    # torch flattens (c, gy, gx); NHWC flattens (gy, gx, c)
    head_w = fb.head_weight.reshape(num_classes, cout, fb.head_grid, fb.head_grid)
    head_w = head_w.transpose(0, 2, 3, 1).reshape(num_classes, n_flat)
    hw_name, hw_scale = g.weights("head_weight", head_w)
    hb_name = g.bias("head_bias", fb.head_bias, s_feat[0], hw_scale)
    scores = g.activation("scores", (1, num_classes), activation_quant(*ranges.values["scores"]))
    g.op("FULLY_CONNECTED", [flat, hw_name, hb_name], [scores], relu=False)
    g.graph.outputs += [features, scores]
    g.graph.validate()
    return g.graph
