"""Float parameters of a trained block, batch norm folded into the conv.

The exporter works on these numpy arrays (float64 for exact folding), not on the torch
modules: ``FloatBlock`` is everything an int8 or float block graph is made of.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ctxconv.train.blocks import ContextualConvBlock, L2Normalize, LinearGoodness


class UnsupportedLayerError(ValueError):
    """A layer the exporter cannot express as int8 TFLite/ONNX ops."""


@dataclass
class FloatBlock:
    """One block as plain arrays: conv (BN folded), optional context bias, linear goodness."""

    index: int
    pool: int  # max-pool size before the conv (1 = none)
    in_size: int  # input feature map height = width
    in_channels: int
    conv_weight: np.ndarray  # (O, I, k, k) torch layout
    conv_bias: np.ndarray  # (O,)
    context_weight: np.ndarray | None  # (O, K): pre-activation bias W_c . c, or None
    head_cell: int  # average-pool cell of the goodness grid
    head_grid: int
    head_weight: np.ndarray  # (K, O * g * g) in torch flatten order (c, gy, gx)
    head_bias: np.ndarray  # (K,)

    @property
    def out_size(self) -> int:
        return self.in_size // self.pool

    @property
    def out_channels(self) -> int:
        return int(self.conv_weight.shape[0])

    @property
    def contextual(self) -> bool:
        return self.context_weight is not None


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float64).cpu().numpy().copy()


def fold_block(block: ContextualConvBlock, index: int, in_size: int) -> FloatBlock:
    """Arrays of one block; UnsupportedLayerError names what cannot be exported."""
    body = block.body
    where = f"block {index}"
    if isinstance(body.pre_norm, L2Normalize):
        raise UnsupportedLayerError(
            f"{where}: per-sample L2 normalisation has no int8 TFLite/TFLM kernel; "
            "train with model.norm=batch (folds into the conv) or none")
    if not isinstance(block.goodness, LinearGoodness):
        raise UnsupportedLayerError(
            f"{where}: energy goodness (mean squared activation) is not exported; "
            "train with model.goodness=linear")
    conv = body.conv
    if conv.context_scale is not None:
        raise UnsupportedLayerError(
            f"{where}: FiLM context scale needs an int8 MUL by a context-dependent vector, "
            "which the exporter does not emit; use model.injection=bias")
    w = _np(conv.conv.weight)  # (O, I, k, k)
    b = _np(conv.conv.bias) if conv.conv.bias is not None else np.zeros(w.shape[0])
    if isinstance(conv.bn, nn.BatchNorm2d):
        bn = conv.bn
        gamma = _np(bn.weight) if bn.affine else np.ones(w.shape[0])
        beta = _np(bn.bias) if bn.affine else np.zeros(w.shape[0])
        inv = gamma / np.sqrt(_np(bn.running_var) + bn.eps)
        w = w * inv[:, None, None, None]
        b = (b - _np(bn.running_mean)) * inv + beta
    pool = body.pool.kernel_size if isinstance(body.pool, nn.MaxPool2d) else 1
    head = block.goodness
    return FloatBlock(
        index=index, pool=int(pool), in_size=in_size, in_channels=int(w.shape[1]),
        conv_weight=w, conv_bias=b,
        context_weight=_np(conv.context_bias.weight) if conv.context_bias is not None else None,
        head_cell=head.cell, head_grid=head.grid,
        head_weight=_np(head.linear.weight), head_bias=_np(head.linear.bias),
    )  # fmt: skip


def float_forward(fb: FloatBlock, x: np.ndarray, context: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Reference float forward in NHWC: (features, scores, intermediate activations).

    Used for calibration ranges; matches the torch block in eval mode.
    """
    t = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))  # NCHW float64
    if fb.pool > 1:
        t = torch.nn.functional.max_pool2d(t, fb.pool)
    pre = torch.nn.functional.conv2d(t, torch.from_numpy(fb.conv_weight),
                                     torch.from_numpy(fb.conv_bias),
                                     padding=fb.conv_weight.shape[-1] // 2)
    acts: dict[str, np.ndarray] = {}
    if fb.contextual:
        if context is None:
            raise ValueError(f"block {fb.index} is contextual: pass a (N, K) context")
        acts["conv_pre"] = pre.numpy().transpose(0, 2, 3, 1)
        ctx = torch.from_numpy(np.asarray(context, np.float64) @ fb.context_weight.T)  # (N, O)
        acts["context_bias"] = ctx.numpy()
        pre = pre + ctx[:, :, None, None]
    h = torch.relu(pre)
    z = torch.nn.functional.avg_pool2d(h, fb.head_cell) if fb.head_cell > 1 else h
    scores = z.flatten(1) @ torch.from_numpy(fb.head_weight).T + torch.from_numpy(fb.head_bias)
    features = h.numpy().transpose(0, 2, 3, 1)  # NHWC
    return features, scores.numpy(), acts
