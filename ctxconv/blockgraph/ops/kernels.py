"""Shared pieces of the batched numpy kernels (bit-exact with TFLite Micro's int8 kernels).

Each op module's ``reference`` takes a leading batch axis N, so one call evaluates a whole
batch of images the way a microcontroller would evaluate them one at a time. This module
holds what several of them use: strided windows with explicit padding, the in-bounds tap
counts, the exact integer matmul and int32 -> int8 requantization.

Exactness of the integer matmul (``exact_int_matmul``): numpy's integer matmul has no
BLAS and is ~9x slower, so the products run through float BLAS on integer-valued
operands. Each term |x - zp| * |w| <= 255 * 128; when K terms can never sum past 2^24,
float32 represents every partial sum exactly whatever order the BLAS adds in; otherwise
float64 (exact below 2^53) is used, and beyond that numpy's integer matmul.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ctxconv.blockgraph.fixedpoint import multiply_by_quantized_multiplier, wrap_int32
from ctxconv.blockgraph.ir import compute_padding

_F32_EXACT = 1 << 24  # integers below this are exact in float32




def window_padding(
    in_size: int, filt: int, stride: int, padding: str
) -> tuple[int, int]:
    """(output size, padding before) along one axis (TFLite's ComputePaddingHeightWidth)."""
    out, before, _ = compute_padding(in_size, filt, stride, padding)
    return out, before


def windows(
    x: np.ndarray,
    filt: tuple[int, int],
    stride: tuple[int, int],
    pad: tuple[int, int],
    out: tuple[int, int],
    pad_value: float,
) -> np.ndarray:
    """Strided patch view: x (N, H, W, C) -> (N, Ho, Wo, C, kh, kw).

    ``pad`` is (top, left); the bottom and right padding follow from the output size
    ``out``. Padded taps read ``pad_value``.
    """
    _, h, w, _ = x.shape
    pt, pl = pad
    pb = max(0, (out[0] - 1) * stride[0] + filt[0] - h - pt)
    pr = max(0, (out[1] - 1) * stride[1] + filt[1] - w - pl)
    if pt or pb or pl or pr:
        x = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=pad_value)
    win = sliding_window_view(x, filt, axis=(1, 2))
    return win[:, :: stride[0], :: stride[1]][:, : out[0], : out[1]]


def valid_counts(size: int, filt: int, stride: int, before: int, out: int) -> np.ndarray:
    """Number of in-bounds filter taps for each output position along one axis: (out,)."""
    start = np.arange(out) * stride - before
    return np.minimum(start + filt, size) - np.maximum(start, 0)


def exact_int_matmul(a: np.ndarray, b: np.ndarray, amax: int | None = None) -> np.ndarray:
    """Exact integer product a (M, K) @ b (K, P) -> int64 (M, P) via float BLAS.

    ``a`` and ``b`` hold integers (any int or float dtype); ``amax`` bounds |a| when the
    caller already knows it, saving a pass over a large im2col matrix.
    """
    if amax is None:
        amax = int(np.abs(a).max(initial=0))
    bmax = int(np.abs(b).max(initial=0))
    k = a.shape[1]
    per_term = max(amax * bmax, 1)
    if per_term * k < _F32_EXACT:
        return (a.astype(np.float32) @ b.astype(np.float32)).astype(np.int64)
    if per_term * k < (1 << 53):  # float64 is exact for the whole reduction
        return (a.astype(np.float64) @ b.astype(np.float64)).astype(np.int64)
    return a.astype(np.int64) @ b.astype(np.int64)  # beyond float: exact but slow


def requantize(
    acc: np.ndarray,
    multiplier: np.ndarray,
    shift: np.ndarray,
    output_zp: int,
    act: tuple[int, int],
    bound: int,
) -> np.ndarray:
    """int32 accumulators -> int8: scale, add output zero point, clamp to activation range.

    ``bound`` caps |acc|; only when it reaches 2^31 can the device's int32 accumulator
    wrap, and only then is the wrap emulated.
    """
    if bound >= 1 << 31:
        acc = wrap_int32(acc)
    out = multiply_by_quantized_multiplier(acc, multiplier, shift) + output_zp
    return np.clip(out, act[0], act[1]).astype(np.int8)


def acc_bound(amax: int, wmat: np.ndarray, bias: np.ndarray | None) -> int:
    """Upper bound of |accumulator|: amax * max column L1 norm of wmat (K, P) + max |bias|."""
    l1 = int(np.abs(wmat.astype(np.int64)).sum(axis=0).max(initial=0))
    return amax * l1 + (0 if bias is None else int(np.abs(bias.astype(np.int64)).max(initial=0)))


def relu_float(out: np.ndarray, relu: bool) -> np.ndarray:
    """A float op's fused RELU."""
    return np.maximum(out, 0.0) if relu else out
