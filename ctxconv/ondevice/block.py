"""A float32 trainable block in numpy: forward, and backward for its own parameters.

Layout is NHWC throughout, as on the device: conv weights OHWI, the head weight
(K, g*g*O) in NHWC flatten order (gy, gx, c), exactly as the exported graphs hold them.
The conv is im2col + one matmul. No gradient flows to the block input: earlier blocks
are frozen, so the max-pool needs no backward and nothing of the input is kept but
the im2col rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ctxconv.blockgraph.geometry import BlockGeometry

F32 = np.float32


def max_pool(x: np.ndarray, p: int) -> np.ndarray:
    """Non-overlapping p x p max-pool: (N, H, W, C) -> (N, H/p, W/p, C)."""
    if p == 1:
        return x
    n, h, w, c = x.shape
    return x.reshape(n, h // p, p, w // p, p, c).max(axis=(2, 4))


def im2col(x: np.ndarray, k: int) -> np.ndarray:
    """'Same'-padded patches: (N, H, W, C) -> (N * H * W, k * k * C), rows in (ky, kx, c)."""
    n, h, w, c = x.shape
    r = k // 2
    padded = np.pad(x, ((0, 0), (r, r), (r, r), (0, 0))) if r else x
    win = sliding_window_view(padded, (k, k), axis=(1, 2))  # (N, H, W, C, k, k)
    return np.ascontiguousarray(win.transpose(0, 1, 2, 4, 5, 3)).reshape(n * h * w, k * k * c)


@dataclass
class ForwardCache:
    """What the backward pass reads: im2col rows, ReLU mask, pooled grid, contexts."""

    cols: np.ndarray  # (N*H*W, k*k*Cin)
    mask: np.ndarray  # (N, H*W, O) bool: pre-activation > 0
    z: np.ndarray  # (N, g*g*O) pooled grid, NHWC flatten order
    context: np.ndarray | None  # (N, K) or None


class TrainableBlock:
    """Parameters (float32 numpy arrays) of one block and its forward/backward."""

    def __init__(self, geom: BlockGeometry, params: dict[str, np.ndarray]) -> None:
        shapes = geom.param_shapes()
        if set(params) != set(shapes):
            raise ValueError(f"parameters {sorted(params)} do not match the block's "
                             f"{sorted(shapes)}")
        for name, shape in shapes.items():
            if tuple(params[name].shape) != shape:
                raise ValueError(f"parameter {name!r} has shape {params[name].shape}, "
                                 f"expected {shape}")
        self.geom = geom
        self.params = {n: np.ascontiguousarray(p, dtype=F32) for n, p in params.items()}

    # ---------------------------------------------------------------- forward

    def forward(self, x: np.ndarray, context: np.ndarray | None = None
                ) -> tuple[np.ndarray, ForwardCache]:
        """Class scores (N, K) of inputs x (N, H, W, Cin) float32, plus the backward cache.

        ``context`` (N, K) is required by a contextual block: it adds ``W_c . c`` to the
        pre-activation.
        """
        g, p = self.geom, self.params
        if x.ndim != 4 or x.shape[1:] != (g.in_size, g.in_size, g.in_channels):
            raise ValueError(f"input shape {x.shape}, expected (N, {g.in_size}, {g.in_size}, "
                             f"{g.in_channels})")
        n = x.shape[0]
        cols = im2col(max_pool(np.asarray(x, F32), g.pool), g.kernel)  # (N*H*W, taps)
        w = p["conv_weight"].reshape(g.filters, g.taps)  # (O, taps)
        pre = (cols @ w.T + p["conv_bias"]).reshape(n, g.pixels, g.filters)  # (N, H*W, O)
        if g.contextual:
            if context is None or context.shape != (n, g.num_classes):
                raise ValueError(f"a contextual block needs a ({n}, {g.num_classes}) context")
            context = np.asarray(context, F32)
            pre += (context @ p["context_weight"].T)[:, None, :]  # (N, 1, O)
        mask = pre > 0
        h = np.where(mask, pre, F32(0))  # ReLU
        gg, c = g.head_grid, g.cell
        z = h.reshape(n, gg, c, gg, c, g.filters).mean(axis=(2, 4), dtype=F32)  # (N, g, g, O)
        z = z.reshape(n, g.n_flat)
        scores = z @ p["head_weight"].T + p["head_bias"]  # (N, K)
        return scores, ForwardCache(cols, mask, z, context if g.contextual else None)

    def features(self, x: np.ndarray, context: np.ndarray | None = None) -> np.ndarray:
        """The block output h (N, H, W, O): the next block's input."""
        g, p = self.geom, self.params
        n = x.shape[0]
        cols = im2col(max_pool(np.asarray(x, F32), g.pool), g.kernel)
        pre = (cols @ p["conv_weight"].reshape(g.filters, g.taps).T + p["conv_bias"])
        pre = pre.reshape(n, g.pixels, g.filters)
        if g.contextual:
            pre += (np.asarray(context, F32) @ p["context_weight"].T)[:, None, :]
        return np.maximum(pre, 0).reshape(n, g.out_size, g.out_size, g.filters)

    # --------------------------------------------------------------- backward

    def backward(self, dscores: np.ndarray, cache: ForwardCache,
                 names: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
        """Gradients of the parameters in ``names`` (default all) from dL/dscores (N, K)."""
        g, p = self.geom, self.params
        names = tuple(self.params) if names is None else names
        ds = np.asarray(dscores, F32)
        n = ds.shape[0]
        grads: dict[str, np.ndarray] = {}
        if "head_weight" in names:
            grads["head_weight"] = ds.T @ cache.z  # (K, g*g*O)
        if "head_bias" in names:
            grads["head_bias"] = ds.sum(axis=0)
        body = [x for x in ("conv_weight", "conv_bias", "context_weight") if x in names]
        if not body:
            return grads
        dz = (ds @ p["head_weight"]).reshape(n, g.head_grid, 1, g.head_grid, 1, g.filters)
        dh = np.broadcast_to(dz / F32(g.cell * g.cell),
                             (n, g.head_grid, g.cell, g.head_grid, g.cell, g.filters))
        dpre = np.where(cache.mask, dh.reshape(n, g.pixels, g.filters), F32(0))  # (N, H*W, O)
        if "conv_bias" in names:
            grads["conv_bias"] = dpre.sum(axis=(0, 1))
        if "context_weight" in names:
            grads["context_weight"] = dpre.sum(axis=1).T @ cache.context  # (O, K)
        if "conv_weight" in names:
            dw = dpre.reshape(n * g.pixels, g.filters).T @ cache.cols  # (O, taps)
            grads["conv_weight"] = dw.reshape(p["conv_weight"].shape)
        return grads


def random_params(geom: BlockGeometry, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded init like torch's default (Kaiming-uniform bound 1/sqrt(fan_in))."""
    rng = np.random.default_rng(seed)

    def uniform(shape: tuple[int, ...], fan_in: int) -> np.ndarray:
        bound = 1.0 / np.sqrt(fan_in)
        return rng.uniform(-bound, bound, shape).astype(F32)

    shapes = geom.param_shapes()
    out = {"conv_weight": uniform(shapes["conv_weight"], geom.taps),
           "conv_bias": uniform(shapes["conv_bias"], geom.taps)}
    if geom.contextual:
        out["context_weight"] = uniform(shapes["context_weight"], geom.num_classes)
    out["head_weight"] = uniform(shapes["head_weight"], geom.n_flat)
    out["head_bias"] = uniform(shapes["head_bias"], geom.n_flat)
    return out
