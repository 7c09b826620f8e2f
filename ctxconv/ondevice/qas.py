"""Whole-block training with int8 weights updated in place (no float weight copy, no
gradient buffer): the numpy model of the device step that ``c/ctxconv_train.c`` runs.

State of a context-free block: conv weights int8 (O, k*k*Cin) with one float32 scale per
output channel, head weights int8 (K, g*g*O) with one scale per class, biases float32.
One step on a batch of int8 block inputs:

1. forward: integer conv (int32 accumulators of (x - zp) * q, exact), per-channel rescale
   + bias, ReLU (mask kept as bits), average-pool grid z (float32), head scores;
2. softmax cross-entropy over the K goodness values, dL/dscores;
3. for each output channel o in turn: dz of its grid cells from the (old) head weights,
   dL/dpre from the ReLU mask, the channel's weight gradient (k*k*Cin floats: the only
   gradient buffer) from the kept int8 inputs, then its update;
4. for each class row of the head: its gradient from z and dL/dscores, then its update.

Update = plain SGD (no state) with quantization-aware scaling (Lin et al., NeurIPS 2022):
the int8 weights are W / s, whose gradient is s * G, rescaled by s^-2, so the int8 step is
``q - lr * G / s`` -- the float SGD step expressed in the channel's own units. The new value
is rounded stochastically (a counter-based hash, so the device and this model draw the same
numbers) so that steps below half an int8 step still move the weights on average; when a
channel would leave [-127, 127] its scale grows to hold it.

Every float32 reduction here runs in one fixed order (sequential loops over the reduced
axis, no BLAS), and the exponential is a polynomial written out operation by operation,
so the C step compiled without FMA contraction gives bit-identical int8 weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ctxconv.blockgraph.geometry import BlockGeometry
from ctxconv.ondevice.block import im2col, max_pool

F32 = np.float32
ROUNDINGS = ("stochastic", "nearest")
#: What an int8 in-place step may update (``qas_step``'s ``update``).
INT8_UPDATES = ("all", "head", "bias")

# exp(x) for x in [-80, 0]: x = n ln2 + r, |r| <= ln2/2, degree-6 Taylor polynomial of e^r
_LOG2E, _LN2_HI, _LN2_LO = F32(1.44269504), F32(0.693145752), F32(1.42860677e-06)
_EXP_POLY = tuple(F32(c) for c in (1 / 720, 1 / 120, 1 / 24, 1 / 6, 0.5, 1.0, 1.0))


def exp_f32(x: np.ndarray) -> np.ndarray:
    """e^x for x <= 0 (clamped to -80), float32, in the operation order of the C step."""
    x = np.clip(np.asarray(x, F32), F32(-80), F32(0))
    n = np.trunc(x * _LOG2E - F32(0.5))  # round half down for x <= 0
    r = (x - n * _LN2_HI) - n * _LN2_LO
    p = _EXP_POLY[0]
    for c in _EXP_POLY[1:]:
        p = p * r + c
    return (p * np.ldexp(F32(1), n.astype(np.int32))).astype(F32)


def hash32(x: np.ndarray) -> np.ndarray:
    """lowbias32 (Chris Wellons): a counter-based uint32 hash."""
    x = np.asarray(x, np.uint32).copy()
    x ^= x >> np.uint32(16)
    x *= np.uint32(0x7FEB352D)
    x ^= x >> np.uint32(15)
    x *= np.uint32(0x846CA68B)
    x ^= x >> np.uint32(16)
    return x


def uniforms(seed: int, step: int, index: np.ndarray) -> np.ndarray:
    """U[0, 1) float32 with 24 bits for parameter ``index`` at ``step``: the device's draws."""
    with np.errstate(over="ignore"):
        key = hash32(np.uint32((seed + step * 0x9E3779B9) & 0xFFFFFFFF))
        return (hash32(key ^ np.asarray(index, np.uint32)) >> np.uint32(8)).astype(F32) \
            * F32(2.0**-24)


#: The "step" of the init draws (``hash_init``): one no training run reaches.
INIT_STEP = 0xFFFFFFFF


def _quant_rows(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-row int8 of float32 rows: scale max|w| / 127 (at least 1e-8 / 127)."""
    w = w.reshape(len(w), -1).astype(F32)
    s = np.maximum(np.abs(w).max(axis=1), F32(1e-8)) / F32(127)
    return np.clip(np.round(w / s[:, None]), -127, 127).astype(np.int8), s.astype(F32)


@dataclass
class Int8Block:
    """A context-free block with int8 weights (per-channel / per-class float32 scales).

    ``in_scale``, ``in_zero_point``: quantization of the int8 block input.
    """

    geom: BlockGeometry
    conv_q: np.ndarray  # (O, taps) int8
    conv_s: np.ndarray  # (O,) float32
    conv_b: np.ndarray  # (O,) float32
    head_q: np.ndarray  # (K, n_flat) int8, NHWC flatten order
    head_s: np.ndarray  # (K,) float32
    head_b: np.ndarray  # (K,) float32
    in_scale: float
    in_zero_point: int
    rescales: int = field(default=0)  # channels whose scale grew

    def __post_init__(self) -> None:
        g = self.geom
        if g.contextual:
            raise ValueError("int8 in-place training supports context-free blocks only "
                             "(the context enters through the goodness head)")
        want = {"conv_q": (g.filters, g.taps), "conv_s": (g.filters,), "conv_b": (g.filters,),
                "head_q": (g.num_classes, g.n_flat), "head_s": (g.num_classes,),
                "head_b": (g.num_classes,)}
        for name, shape in want.items():
            a = getattr(self, name)
            if a.shape != shape:
                raise ValueError(f"{name} has shape {a.shape}, expected {shape}")
        self.conv_q = np.ascontiguousarray(self.conv_q, np.int8)
        self.head_q = np.ascontiguousarray(self.head_q, np.int8)
        for name in ("conv_s", "conv_b", "head_s", "head_b"):
            setattr(self, name, np.ascontiguousarray(getattr(self, name), F32))
        self.in_scale = float(F32(self.in_scale))
        self.in_zero_point = int(self.in_zero_point)

    @classmethod
    def from_float(cls, geom: BlockGeometry, params: dict[str, np.ndarray], in_scale: float,
                   in_zero_point: int) -> Int8Block:
        """Symmetric per-channel int8 of float parameters (conv OHWI, head (K, n_flat))."""
        cq, cs = _quant_rows(params["conv_weight"])
        hq, hs = _quant_rows(params["head_weight"])
        return cls(geom, cq, cs, params["conv_bias"], hq, hs, params["head_bias"], in_scale,
                   in_zero_point)

    @classmethod
    def hash_init(cls, geom: BlockGeometry, in_scale: float, in_zero_point: int, seed: int
                  ) -> Int8Block:
        """The device's init from scratch (``ctxconv_train_reinit``): uniforms of the
        counter hash at ``INIT_STEP`` in the order conv weights, conv biases, head weights,
        head biases, scaled to torch's default bounds 1/sqrt(fan_in), quantized per row."""
        n_c, n_h = geom.filters * geom.taps, geom.num_classes * geom.n_flat
        u = uniforms(seed, INIT_STEP, np.arange(n_c + geom.filters + n_h + geom.num_classes,
                                                dtype=np.uint32))
        b_c = F32(1) / np.sqrt(F32(geom.taps))
        b_h = F32(1) / np.sqrt(F32(geom.n_flat))
        v = F32(2) * u - F32(1)
        cw, cb = v[:n_c] * b_c, v[n_c:n_c + geom.filters] * b_c
        hw, hb = v[n_c + geom.filters:-geom.num_classes] * b_h, v[-geom.num_classes:] * b_h
        cq, cs = _quant_rows(cw.reshape(geom.filters, -1))
        hq, hs = _quant_rows(hw.reshape(geom.num_classes, -1))
        return cls(geom, cq, cs, cb, hq, hs, hb, in_scale, in_zero_point)

    def copy(self) -> Int8Block:
        return Int8Block(self.geom, self.conv_q.copy(), self.conv_s.copy(), self.conv_b.copy(),
                         self.head_q.copy(), self.head_s.copy(), self.head_b.copy(),
                         self.in_scale, self.in_zero_point, self.rescales)

    @property
    def int8_params(self) -> int:
        return self.conv_q.size + self.head_q.size

    def float_params(self) -> dict[str, np.ndarray]:
        """Dequantized parameters in the TrainableBlock layout (for checks and export)."""
        g = self.geom
        return {"conv_weight": (self.conv_q * self.conv_s[:, None]).reshape(
                    g.filters, g.kernel, g.kernel, g.in_channels).astype(F32),
                "conv_bias": self.conv_b.copy(),
                "head_weight": (self.head_q * self.head_s[:, None]).astype(F32),
                "head_bias": self.head_b.copy()}  # fmt: skip

    # ------------------------------------------------------------------ forward

    def _cols(self, xq: np.ndarray) -> np.ndarray:
        """(B, H, W, Cin) int8 -> (B, P, taps) int32 of (x - zp), zero outside the map."""
        g = self.geom
        if xq.dtype != np.int8 or xq.shape[1:] != (g.in_size, g.in_size, g.in_channels):
            raise ValueError(f"block input must be int8 (N, {g.in_size}, {g.in_size}, "
                             f"{g.in_channels}), got {xq.dtype} {xq.shape}")
        x = max_pool(xq, g.pool).astype(np.int32) - np.int32(self.in_zero_point)
        return im2col(x, g.kernel).reshape(len(xq), g.pixels, g.taps)

    def _pre(self, cols: np.ndarray) -> np.ndarray:
        """Pre-activation (B, P, O) float32: (float)int32 acc * (s_in * s_o) + b_o."""
        acc = cols.astype(np.int64) @ self.conv_q.astype(np.int64).T  # exact
        mul = F32(self.in_scale) * self.conv_s
        return acc.astype(F32) * mul + self.conv_b

    def _grid(self, h: np.ndarray) -> np.ndarray:
        """(B, P, O) -> pooled grid z (B, g*g*O), cells summed row by row, times 1/(c*c)."""
        g = self.geom
        n, gg, c = len(h), g.head_grid, g.cell
        m = h.reshape(n, gg, c, gg, c, g.filters)
        acc = np.zeros((n, gg, gg, g.filters), F32)
        for cy in range(c):
            for cx in range(c):
                acc = acc + m[:, :, cy, :, cx, :]
        return (acc * (F32(1) / F32(c * c))).reshape(n, g.n_flat)

    def _scores(self, z: np.ndarray) -> np.ndarray:
        acc = np.zeros((len(z), self.geom.num_classes), F32)
        hq = self.head_q.astype(F32)
        for j in range(self.geom.n_flat):
            acc = acc + z[:, j, None] * hq[:, j]
        return acc * self.head_s + self.head_b

    def forward(self, xq: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(scores (B, K), z (B, n_flat), ReLU mask (B, P, O), cols (B, P, taps) int32)."""
        cols = self._cols(xq)
        pre = self._pre(cols)
        mask = pre > 0
        z = self._grid(np.where(mask, pre, F32(0)))
        return self._scores(z), z, mask, cols

    def features(self, xq: np.ndarray) -> np.ndarray:
        """Block output h (N, H', W', O) float32 (the next block's input before int8)."""
        g = self.geom
        pre = self._pre(self._cols(xq))
        return np.maximum(pre, F32(0)).reshape(len(xq), g.out_size, g.out_size, g.filters)

    def goodness(self, xq: np.ndarray, batch: int = 250) -> np.ndarray:
        """Class scores (N, K), fast float path (for evaluation only)."""
        g = self.geom
        out = []
        w_head = (self.head_q * self.head_s[:, None]).astype(F32)
        for i in range(0, len(xq), batch):
            h = np.maximum(self._pre(self._cols(xq[i:i + batch])), F32(0))
            z = h.reshape(-1, g.head_grid, g.cell, g.head_grid, g.cell, g.filters).mean(
                axis=(2, 4)).reshape(-1, g.n_flat)
            out.append(z @ w_head.T + self.head_b)
        return np.concatenate(out) if out else np.zeros((0, g.num_classes), F32)


@dataclass(frozen=True)
class QasStepResult:
    loss: float
    correct: int
    rescaled: int  # channels/rows whose scale grew this step


def softmax_grad(scores: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """(mean CE loss, dL/dscores (B, K)) with sequential sums and ``exp_f32``."""
    b, k = scores.shape
    m = scores[:, 0].copy()
    for j in range(1, k):
        m = np.maximum(m, scores[:, j])
    e = exp_f32(scores - m[:, None])
    s = np.zeros(b, F32)
    for j in range(k):
        s = s + e[:, j]
    p = e / s[:, None]
    rows = np.arange(b)
    per = np.log(s).astype(F32) - (scores[rows, labels] - m)
    loss = F32(0)
    for v in per:
        loss = F32(loss + v)
    p[rows, labels] -= F32(1)
    return float(loss / F32(b)), (p / F32(b)).astype(F32)


def requantize(q: np.ndarray, step: np.ndarray, scale: np.ndarray, u: np.ndarray | None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of int8 ``q`` minus float ``step`` (same units), rounded (stochastically with
    uniforms ``u``, else to nearest) into int8; a row beyond +-127 grows its scale.

    Returns (new q, new scale, bool rows rescaled).
    """
    v = q.astype(F32) - step
    m = np.abs(v).max(axis=1)
    grow = m > F32(127)
    f = np.where(grow, m / F32(127), F32(1)).astype(F32)
    v = np.where(grow[:, None], v / f[:, None], v)
    r = np.floor(v + u) if u is not None else np.round(v)
    return np.clip(r, -127, 127).astype(np.int8), (scale * f).astype(F32), grow


def qas_step(block: Int8Block, xq: np.ndarray, labels: np.ndarray, lr: float, step: int,
             seed: int = 0, rounding: str = "stochastic", update: str = "all"
             ) -> QasStepResult:
    """One in-place training step on int8 inputs xq (B, H, W, Cin) with labels (B,).

    ``update``: ``all`` (every weight and bias), ``head`` (the head's weights and biases),
    ``bias`` (the conv and head biases); the rest keep their values."""
    if rounding not in ROUNDINGS:
        raise ValueError(f"unknown rounding {rounding!r}; choose one of {ROUNDINGS}")
    if update not in INT8_UPDATES:
        raise ValueError(f"unknown update set {update!r}; choose one of {INT8_UPDATES}")
    g = block.geom
    labels = np.asarray(labels, np.int64)
    b, k, o_n, c = len(labels), g.num_classes, g.filters, g.cell
    scores, z, mask, cols = block.forward(xq)
    loss, ds = softmax_grad(scores, labels)
    if not np.isfinite(loss):
        raise FloatingPointError(f"loss is {loss}: training diverged; lower the learning rate")
    correct = int((scores.argmax(axis=1) == labels).sum())
    lr32 = F32(lr)

    # conv channels, in order, against the old head weights
    wk = ds * block.head_s  # (B, K)
    hq = block.head_q.astype(F32)
    dz = np.zeros((b, g.n_flat), F32)
    for j in range(k):
        dz = dz + wk[:, j, None] * hq[j]
    dz = dz.reshape(b, g.head_grid, g.head_grid, o_n)
    # each pixel's cell: dpre = mask ? dz[cell] / (c * c) : 0
    py, px = np.divmod(np.arange(g.pixels), g.out_size)
    dpre = dz[:, py // c, px // c, :] * (F32(1) / F32(c * c))  # (B, P, O)
    dpre = np.where(mask, dpre, F32(0))
    gw = np.zeros((o_n, g.taps), F32)
    colsf = cols.astype(F32)
    for r in range(b if update == "all" else 0):  # only "all" changes the conv weights
        for p in range(g.pixels):
            gw = gw + dpre[r, p, :, None] * colsf[r, p]
    gb = np.zeros(o_n, F32)
    for r in range(b):
        rs = np.zeros(o_n, F32)
        for p in range(g.pixels):
            rs = rs + dpre[r, p]
        gb = gb + rs
    a = (lr32 * F32(block.in_scale)) / block.conv_s  # (O,) int8 units per unit of gradient
    u = None
    if rounding == "stochastic":
        u = uniforms(seed, step, np.arange(block.int8_params, dtype=np.uint32))
    grow_c = grow_h = np.zeros(0, bool)
    if update == "all":
        block.conv_q, block.conv_s, grow_c = requantize(
            block.conv_q, a[:, None] * gw, block.conv_s,
            None if u is None else u[: block.conv_q.size].reshape(block.conv_q.shape))
    if update in ("all", "bias"):
        block.conv_b = (block.conv_b - lr32 * gb).astype(F32)

    # head rows
    gh = np.zeros((k, g.n_flat), F32)
    for r in range(b):
        gh = gh + ds[r, :, None] * z[r]
    ghb = np.zeros(k, F32)
    for r in range(b):
        ghb = ghb + ds[r]
    ah = lr32 / block.head_s
    if update != "bias":
        block.head_q, block.head_s, grow_h = requantize(
            block.head_q, ah[:, None] * gh, block.head_s,
            None if u is None else u[block.conv_q.size:].reshape(block.head_q.shape))
    block.head_b = (block.head_b - lr32 * ghb).astype(F32)
    rescaled = int(grow_c.sum() + grow_h.sum())
    block.rescales += rescaled
    return QasStepResult(loss, correct, rescaled)


def quantize_features(h: np.ndarray, scale: float) -> np.ndarray:
    """ReLU output h >= 0 float32 -> int8 with zero point -128 (next block's input)."""
    return np.clip(np.round(h / F32(scale)) - 128, -128, 127).astype(np.int8)


def calibrate_features(h: np.ndarray) -> float:
    """Output scale of a ReLU block: its maximum over the calibration batch maps to 127."""
    return float(max(float(h.max()), 1e-6) / 255.0)
