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

from ctxconv.blockgraph import ops
from ctxconv.blockgraph.ir import L2_NORM_QUANT, BlockGraph, Op, Quant, Tensor
from ctxconv.blockgraph.ops import l2norm
from ctxconv.export.fold import FloatBlock, float_forward

CALIB_METHODS = ("minmax", "percentile")
#: Intermediates that depend on the context only (K values, exactly known): always min/max.
CONTEXT_VECTORS = ("context_bias", "film_scale")
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


def _observe(r: Ranges, name: str, x: np.ndarray, method: str, percentile: float) -> None:
    """Widen ``r``'s range of ``name`` to cover ``x`` (the union over observations); the
    context vectors (a column of the context weights per pass) by min/max."""
    lo, hi = _range(x, "minmax" if name in CONTEXT_VECTORS else method, percentile)
    if name in r.values:
        lo, hi = min(lo, r.values[name][0]), max(hi, r.values[name][1])
    r.values[name] = (lo, hi)


def calibrate(blocks: list[FloatBlock], images: np.ndarray, num_classes: int,
              method: str = "minmax", percentile: float = 99.99) -> list[Ranges]:
    """Ranges of every block's activations on ``images`` (N, H, W, C), normalised floats.

    Blocks before the first contextual block see the images once. From it on, every block
    is calibrated on the features of every candidate context (K x N inputs, what multipass
    feeds it: block i+1's input under context c is block i's output under c), one candidate
    at a time so memory stays that of N images; each range is the union of the
    per-candidate ranges (for minmax exactly the range over all K x N).
    """
    first = next((i for i, fb in enumerate(blocks) if fb.contextual), len(blocks))
    ranges = [Ranges() for _ in blocks]
    x = images.astype(np.float64)
    for fb, r in zip(blocks[:first], ranges, strict=False):  # context-free prefix: once
        _observe(r, "input", x, method, percentile)
        x, scores, acts = float_forward(fb, x)
        for name, a in {**acts, "features": x}.items():
            _observe(r, name, a, method, percentile)
        _observe(r, "scores", scores, method, percentile)
    for c in range(num_classes if first < len(blocks) else 0):
        context = np.zeros((x.shape[0], num_classes))  # (N, K) one-hot c
        context[:, c] = 1.0
        xc = x
        for fb, r in zip(blocks[first:], ranges[first:], strict=True):
            _observe(r, "input", xc, method, percentile)
            xc, scores, acts = float_forward(fb, xc, context if fb.contextual else None)
            for name, a in {**acts, "features": xc}.items():
                _observe(r, name, a, method, percentile)
            _observe(r, "scores", scores, method, percentile)
    return ranges


def _per_channel_weights(w: np.ndarray, zero_scale: float = 1e-8
                         ) -> tuple[np.ndarray, np.ndarray]:
    """int8 weights and per-channel scales along axis 0 (symmetric, zero point 0); an
    all-zero channel gets ``zero_scale``."""
    absmax = np.abs(w.reshape(w.shape[0], -1)).max(axis=1)
    scale = np.where(absmax > 0, absmax / 127.0, zero_scale)
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

    def weights(self, name: str, w: np.ndarray, zero_scale: float = 1e-8
                ) -> tuple[str, np.ndarray]:
        """Per-channel int8 weights (or float32); returns (name, per-channel scale)."""
        if not self.int8:
            self.graph.tensors[name] = Tensor(name, w.shape, "float32", None, w.astype(np.float32))
            return name, np.ones(w.shape[0], np.float32)
        q, scale = _per_channel_weights(w, zero_scale)
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


def _context_vector(g: _GraphBuilder, name: str, w_base: str, weight: np.ndarray, bias: float,
                    quant: tuple[float, int]) -> str:
    """FULLY_CONNECTED of the context, ``bias + W . c`` (1, O), reshaped to (1, 1, 1, O)."""
    cout = weight.shape[0]
    # an all-zero row (FiLM starts at zero) keeps a scale at which the bias fits in int32
    w_name, w_scale = g.weights(w_base, weight, zero_scale=1e-6)
    b_name = g.bias(f"{w_base}_bias", np.full(cout, bias), CONTEXT_QUANT[0], w_scale)
    vec = g.activation(name, (1, cout), quant)
    g.op("FULLY_CONNECTED", ["context", w_name, b_name], [vec], relu=False)
    vec4 = g.activation(f"{name}_4d", (1, 1, 1, cout), quant)
    g.op("RESHAPE", [vec], [vec4], shape=(1, 1, 1, cout))
    return vec4


def _l2_normalize(g: _GraphBuilder, x: str, size: int, channels: int,
                  s_in: tuple[float, int]) -> str:
    """Per-sample L2 normalisation over (H, W, C): RESHAPE to (1, H*W*C), L2_NORMALIZATION
    (TFLite's fixed output quantization 1/128, 0: over the last axis only), RESHAPE back."""
    n = size * size * channels
    flat = g.activation("l2_in", (1, n), s_in)
    g.op("RESHAPE", [x], [flat], shape=(1, n))
    unit = g.activation("l2", (1, n), L2_NORM_QUANT)
    g.op(l2norm.KIND, [flat], [unit])
    out = g.activation("l2_4d", (1, size, size, channels), L2_NORM_QUANT)
    g.op("RESHAPE", [unit], [out], shape=(1, size, size, channels))
    return out


def _contextual_body(g: _GraphBuilder, fb: FloatBlock, ranges: Ranges, pre: str,
                     s_feat: tuple[float, int], num_classes: int) -> None:
    """conv_pre [* (1 + W_s . c)] [+ W_b . c] -> ReLU -> ``features``."""
    size, cout = fb.out_size, fb.out_channels
    g.graph.inputs.append(g.activation("context", (1, num_classes), CONTEXT_QUANT))
    q = {name: activation_quant(*ranges.values[name]) for name in ranges.values}
    shape = (1, size, size, cout)
    if fb.context_scale is not None:
        scale4 = _context_vector(g, "film_scale", "film_weight", fb.context_scale, 1.0,
                                 q["film_scale"])
        last = fb.context_weight is None
        out = g.activation("features" if last else "film", shape, s_feat if last else q["film"])
        g.op("MUL", [pre, scale4], [out], relu=last)
        pre = out
    if fb.context_weight is not None:
        bias4 = _context_vector(g, "context_bias", "context_weight", fb.context_weight, 0.0,
                                q["context_bias"])
        g.activation("features", shape, s_feat)
        g.op("ADD", [pre, bias4], ["features"], relu=True)


def _linear_head(g: _GraphBuilder, fb: FloatBlock, ranges: Ranges, s_feat: tuple[float, int],
                 num_classes: int) -> str:
    """Average pool to the grid, flatten, FULLY_CONNECTED -> ``scores`` (1, K)."""
    assert fb.head_weight is not None and fb.head_bias is not None
    cout = fb.out_channels
    grid_in = "features"
    if fb.head_cell > 1:
        grid_in = g.activation("grid", (1, fb.head_grid, fb.head_grid, cout), s_feat)
        g.op("AVERAGE_POOL_2D", ["features"], [grid_in], filter=(fb.head_cell, fb.head_cell),
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
    return scores


def _energy_head(g: _GraphBuilder, fb: FloatBlock, ranges: Ranges) -> str:
    """Mean squared activation: MUL(features, features), flatten, MEAN -> ``goodness`` (1, 1)."""
    size, cout = fb.out_size, fb.out_channels
    s_sq = activation_quant(*ranges.values["squares"])
    squares = g.activation("squares", (1, size, size, cout), s_sq)
    g.op("MUL", ["features", "features"], [squares], relu=False)
    n = size * size * cout
    flat = g.activation("squares_flat", (1, n), s_sq)
    g.op("RESHAPE", [squares], [flat], shape=(1, n))
    goodness = g.activation("goodness", (1, 1), activation_quant(*ranges.values["goodness"]))
    g.op("MEAN", [flat], [goodness], axes=(1,), keep_dims=True)
    return goodness


def build_block_graph(fb: FloatBlock, ranges: Ranges, num_classes: int, int8: bool = True
                      ) -> BlockGraph:
    """The int8 (or float) graph of one block: (features_in[, context]) -> (features, scores),
    or (features, goodness) for an energy goodness (one value per pass and context)."""
    g = _GraphBuilder(f"block{fb.index}", int8)
    cin, cout = fb.in_channels, fb.out_channels
    s_in = activation_quant(*ranges.values["input"])
    x = g.activation("features_in", (1, fb.in_size, fb.in_size, cin), s_in)
    g.graph.inputs.append(x)
    size = fb.out_size
    if fb.pool > 1:
        pooled = g.activation("pooled", (1, size, size, cin), s_in)
        g.op("MAX_POOL_2D", [x], [pooled], filter=(fb.pool, fb.pool),
             stride=(fb.pool, fb.pool), padding="VALID")
        x = pooled
    if fb.l2_norm:
        x = _l2_normalize(g, x, size, cin, s_in)
        s_in = L2_NORM_QUANT
    s_feat = activation_quant(*ranges.values["features"])
    w_name, w_scale = g.weights("conv_weight", fb.conv_weight.transpose(0, 2, 3, 1))  # OHWI
    b_name = g.bias("conv_bias", fb.conv_bias, s_in[0], w_scale)
    if fb.contextual:
        pre = g.activation("conv_pre", (1, size, size, cout),
                           activation_quant(*ranges.values["conv_pre"]))
        g.op("CONV_2D", [x, w_name, b_name], [pre], stride=(1, 1), padding="SAME", relu=False)
        _contextual_body(g, fb, ranges, pre, s_feat, num_classes)
    else:
        g.activation("features", (1, size, size, cout), s_feat)
        g.op("CONV_2D", [x, w_name, b_name], ["features"], stride=(1, 1), padding="SAME",
             relu=True)
    score = (_energy_head(g, fb, ranges) if fb.goodness == "energy"
             else _linear_head(g, fb, ranges, s_feat, num_classes))
    g.graph.outputs += ["features", score]
    ops.validate_structure(g.graph)
    return g.graph
