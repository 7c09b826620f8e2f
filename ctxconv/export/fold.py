"""Float parameters of a trained block, batch norm folded into the conv.

The exporter works on these numpy arrays (float64 for exact folding), not on the torch
modules: ``FloatBlock`` is everything an int8 or float block graph is made of.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ctxconv.blockgraph.ops import l2norm
from ctxconv.train.blocks import ContextualConvBlock, L2Normalize, LinearGoodness


class UnsupportedLayerError(ValueError):
    """A layer the exporter cannot express as int8 TFLite/ONNX ops."""


#: Largest input of an int8 L2 normalization whose int32 sum of squares cannot overflow.
L2_MAX_ELEMENTS = l2norm.MAX_DEPTH


@dataclass
class FloatBlock:
    """One block as plain arrays: conv (BN folded), optional context injection, goodness.

    With ``l2_norm`` the conv reads the unit-norm input: the sqrt(numel) factor of
    ``L2Normalize`` is folded into ``conv_weight``.
    """

    index: int
    pool: int  # max-pool size before the conv (1 = none)
    in_size: int  # input feature map height = width
    in_channels: int
    conv_weight: np.ndarray  # (O, I, k, k) torch layout
    conv_bias: np.ndarray  # (O,)
    context_weight: np.ndarray | None  # (O, K): pre-activation bias W_c . c, or None
    head_cell: int  # average-pool cell of the goodness grid (linear goodness)
    head_grid: int  # 0 for energy goodness
    head_weight: np.ndarray | None  # (K, O * g * g) in torch flatten order (c, gy, gx)
    head_bias: np.ndarray | None  # (K,)
    context_scale: np.ndarray | None = None  # (O, K): FiLM y * (1 + W_s . c), or None
    l2_norm: bool = False  # per-sample L2 normalisation of the (pooled) input
    goodness: str = "linear"  # "linear" (class scores) | "energy" (mean squared output)

    @property
    def out_size(self) -> int:
        return self.in_size // self.pool

    @property
    def out_channels(self) -> int:
        return int(self.conv_weight.shape[0])

    @property
    def contextual(self) -> bool:
        return self.context_weight is not None or self.context_scale is not None

    def param_count(self) -> int:
        arrays = (self.conv_weight, self.conv_bias, self.context_weight, self.context_scale,
                  self.head_weight, self.head_bias)
        return int(sum(a.size for a in arrays if a is not None))


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float64).cpu().numpy().copy()


def fold_block(block: ContextualConvBlock, index: int, in_size: int) -> FloatBlock:
    """Arrays of one block; UnsupportedLayerError names what cannot be exported."""
    body = block.body
    conv = body.conv
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
    l2 = isinstance(body.pre_norm, L2Normalize)
    if l2:
        numel = w.shape[1] * (in_size // int(pool)) ** 2
        if numel > L2_MAX_ELEMENTS:
            raise UnsupportedLayerError(
                f"block {index}: {l2norm.KIND} over {numel} input values: TFLite's int8 "
                f"kernel sums their squares in int32, which can overflow above "
                f"{L2_MAX_ELEMENTS}; pool earlier or use model.norm=batch")
        w = w * np.sqrt(numel)  # L2Normalize's sqrt(numel), folded into the conv
    head = block.goodness
    linear = isinstance(head, LinearGoodness)
    return FloatBlock(
        index=index, pool=int(pool), in_size=in_size, in_channels=int(w.shape[1]),
        conv_weight=w, conv_bias=b,
        context_weight=_np(conv.context_bias.weight) if conv.context_bias is not None else None,
        head_cell=head.cell if linear else 0, head_grid=head.grid if linear else 0,
        head_weight=_np(head.linear.weight) if linear else None,
        head_bias=_np(head.linear.bias) if linear else None,
        context_scale=(_np(conv.context_scale.weight) if conv.context_scale is not None
                       else None),
        l2_norm=l2, goodness="linear" if linear else "energy",
    )  # fmt: skip


def _nhwc(t: torch.Tensor) -> np.ndarray:
    return t.numpy().transpose(0, 2, 3, 1)


def float_forward(fb: FloatBlock, x: np.ndarray, context: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Reference float forward in NHWC: (features, scores, intermediate activations).

    ``scores`` is (N, K) for a linear goodness, the goodness (N, 1) for an energy one. The
    intermediates, named like the graph tensors, give the calibration ranges; matches the
    torch block in eval mode.
    """
    t = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))  # NCHW float64
    if fb.pool > 1:
        t = torch.nn.functional.max_pool2d(t, fb.pool)
    acts: dict[str, np.ndarray] = {}
    if fb.l2_norm:
        norm = t.flatten(1).norm(dim=1).clamp_min(1e-6)
        t = t / norm[:, None, None, None]  # sqrt(numel) is in conv_weight
        acts["l2"] = _nhwc(t)
    pre = torch.nn.functional.conv2d(t, torch.from_numpy(fb.conv_weight),
                                     torch.from_numpy(fb.conv_bias),
                                     padding=fb.conv_weight.shape[-1] // 2)
    if fb.contextual:
        if context is None:
            raise ValueError(f"block {fb.index} is contextual: pass a (N, K) context")
        acts["conv_pre"] = _nhwc(pre)
        c = np.asarray(context, np.float64)
        if fb.context_scale is not None:
            scale = torch.from_numpy(1.0 + c @ fb.context_scale.T)  # (N, O)
            acts["film_scale"] = scale.numpy()
            pre = pre * scale[:, :, None, None]
            acts["film"] = _nhwc(pre)
        if fb.context_weight is not None:
            ctx = torch.from_numpy(c @ fb.context_weight.T)  # (N, O)
            acts["context_bias"] = ctx.numpy()
            pre = pre + ctx[:, :, None, None]
    h = torch.relu(pre)
    features = _nhwc(h)
    if fb.goodness == "energy":
        squares = h * h
        acts["squares"] = _nhwc(squares)
        scores = squares.flatten(1).mean(dim=1, keepdim=True)  # (N, 1)
        acts["goodness"] = scores.numpy()
        return features, scores.numpy(), acts
    assert fb.head_weight is not None and fb.head_bias is not None
    z = torch.nn.functional.avg_pool2d(h, fb.head_cell) if fb.head_cell > 1 else h
    scores = z.flatten(1) @ torch.from_numpy(fb.head_weight).T + torch.from_numpy(fb.head_bias)
    return features, scores.numpy(), acts
