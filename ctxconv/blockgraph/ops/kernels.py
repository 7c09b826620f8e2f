"""Batched numpy kernels, bit-exact with TFLite Micro's int8 reference kernels.

Every kernel takes a leading batch axis N, so one call evaluates a whole batch of
images the way a microcontroller would evaluate them one at a time. Integer kernels
follow the reference code in tensorflow/lite/kernels/internal/reference/integer_ops
(and pooling.h), including padding, rounding and clamping; float32 kernels are the
plain reference for float graphs.

Exactness of the integer matmul (``exact_int_matmul``): numpy's integer matmul has no
BLAS and is ~9x slower, so the products run through float BLAS on integer-valued
operands. Each term |x - zp| * |w| <= 255 * 128; when K terms can never sum past 2^24,
float32 represents every partial sum exactly whatever order the BLAS adds in; otherwise
float64 (exact below 2^53) is used, and beyond that numpy's integer matmul.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ctxconv.blockgraph.fixedpoint import (
    multiply_by_quantized_multiplier,
    multiply_by_quantized_multiplier_smaller_than_one,
    wrap_int32,
)
from ctxconv.blockgraph.ir import compute_padding

if TYPE_CHECKING:
    pass

_F32_EXACT = 1 << 24  # integers below this are exact in float32




def _windows(
    x: np.ndarray, filt: tuple[int, int], stride: tuple[int, int], padding: str, pad_value: float
) -> np.ndarray:
    """Strided patch view: x (N, H, W, C) -> (N, Ho, Wo, C, kh, kw), padded with pad_value."""
    _, h, w, _ = x.shape
    ho, pt, pb = compute_padding(h, filt[0], stride[0], padding)
    wo, pl, pr = compute_padding(w, filt[1], stride[1], padding)
    if pt or pb or pl or pr:
        x = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=pad_value)
    win = sliding_window_view(x, filt, axis=(1, 2))
    return win[:, :: stride[0], :: stride[1]][:, :ho, :wo]


def _valid_counts(size: int, filt: int, stride: int, padding: str) -> np.ndarray:
    """Number of in-bounds filter taps for each output position along one axis: (out,)."""
    out, before, _ = compute_padding(size, filt, stride, padding)
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


def _requantize(
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


def _acc_bound(amax: int, wmat: np.ndarray, bias: np.ndarray | None) -> int:
    """Upper bound of |accumulator|: amax * max column L1 norm of wmat (K, P) + max |bias|."""
    l1 = int(np.abs(wmat.astype(np.int64)).sum(axis=0).max(initial=0))
    return amax * l1 + (0 if bias is None else int(np.abs(bias.astype(np.int64)).max(initial=0)))


# ----------------------------------------------------------------------------- int8


def conv2d_int8(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None,
    input_zp: int,
    output_zp: int,
    multiplier: np.ndarray,
    shift: np.ndarray,
    act: tuple[int, int],
    stride: tuple[int, int],
    padding: str,
) -> np.ndarray:
    """reference_integer_ops::ConvPerChannel on a batch.

    x (N, H, W, Cin) int8; weight (Cout, kh, kw, Cin) int8 symmetric; bias (Cout,) int32;
    multiplier/shift (Cout,) from QuantizeMultiplier(in_scale * w_scale[c] / out_scale).
    Padded taps contribute nothing, i.e. they read the input zero point.
    """
    cout, kh, kw, cin = weight.shape
    xs = x.astype(np.float32) - np.float32(input_zp)  # (N, H, W, Cin), integers |v| <= 255
    amax = int(np.abs(xs).max(initial=0))
    win = _windows(xs, (kh, kw), stride, padding, 0.0)  # (N, Ho, Wo, Cin, kh, kw)
    n, ho, wo = win.shape[:3]
    cols = win.transpose(0, 1, 2, 4, 5, 3).reshape(n * ho * wo, kh * kw * cin)
    wmat = weight.reshape(cout, -1).T  # (kh*kw*Cin, Cout)
    acc = exact_int_matmul(cols, wmat, amax)  # (N*Ho*Wo, Cout)
    bound = _acc_bound(amax, wmat, bias)
    if bias is not None:
        acc += bias.astype(np.int64)
    return _requantize(acc, multiplier, shift, output_zp, act, bound).reshape(n, ho, wo, cout)


def fully_connected_int8(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None,
    input_zp: int,
    weight_zp: int,
    output_zp: int,
    multiplier: np.ndarray,
    shift: np.ndarray,
    act: tuple[int, int],
) -> np.ndarray:
    """reference_integer_ops::FullyConnected (per-tensor or per-channel multiplier).

    x (N, Din) int8; weight (Dout, Din) int8; bias (Dout,) int32 -> (N, Dout) int8.
    """
    xs = x.astype(np.int16) - np.int16(input_zp)
    ws = weight.astype(np.int16) - np.int16(weight_zp)
    amax = int(np.abs(xs).max(initial=0))
    acc = exact_int_matmul(xs, ws.T, amax)  # (N, Dout)
    bound = _acc_bound(amax, ws.T, bias)
    if bias is not None:
        acc += bias.astype(np.int64)
    return _requantize(acc, multiplier, shift, output_zp, act, bound)


def max_pool_2d_int8(
    x: np.ndarray,
    filt: tuple[int, int],
    stride: tuple[int, int],
    padding: str,
    act: tuple[int, int],
) -> np.ndarray:
    """reference_integer_ops::MaxPool: max over in-bounds taps, then clamp. (N,H,W,C) int8."""
    win = _windows(x.astype(np.int16), filt, stride, padding, -32768)
    out = win.max(axis=(-2, -1))  # (N, Ho, Wo, C)
    return np.clip(out, act[0], act[1]).astype(np.int8)


def average_pool_2d_int8(
    x: np.ndarray,
    filt: tuple[int, int],
    stride: tuple[int, int],
    padding: str,
    act: tuple[int, int],
) -> np.ndarray:
    """reference_integer_ops::AveragePool on raw int8 values (input and output share params).

    Sums in-bounds taps, divides by their count rounding half away from zero
    (``acc > 0 ? (acc + n/2) / n : (acc - n/2) / n`` with C truncating division), clamps.
    """
    _, h, w, _ = x.shape
    win = _windows(x.astype(np.int32), filt, stride, padding, 0)
    acc = win.sum(axis=(-2, -1), dtype=np.int64)  # (N, Ho, Wo, C)
    count = np.multiply.outer(
        _valid_counts(h, filt[0], stride[0], padding),
        _valid_counts(w, filt[1], stride[1], padding),
    )[None, :, :, None]  # (1, Ho, Wo, 1)
    num = np.where(acc > 0, acc + count // 2, acc - count // 2)
    out = np.sign(num) * (np.abs(num) // count)
    return np.clip(out, act[0], act[1]).astype(np.int8)


def add_int8(
    a: np.ndarray,
    b: np.ndarray,
    a_zp: int,
    b_zp: int,
    output_zp: int,
    a_mult: tuple[int, int],
    b_mult: tuple[int, int],
    out_mult: tuple[int, int],
    act: tuple[int, int],
    left_shift: int = 20,
) -> np.ndarray:
    """reference_integer_ops::Add (broadcasting like BroadcastAdd6DSlow).

    Each input: (q - zp) << 20, scaled by its (multiplier, shift) pair; the sum is
    scaled by the output pair, offset by the output zero point and clamped.
    """
    sa = (a.astype(np.int64) - a_zp) << left_shift
    sb = (b.astype(np.int64) - b_zp) << left_shift
    sa = multiply_by_quantized_multiplier_smaller_than_one(sa, *a_mult)
    sb = multiply_by_quantized_multiplier_smaller_than_one(sb, *b_mult)
    raw = multiply_by_quantized_multiplier_smaller_than_one(sa + sb, *out_mult) + output_zp
    return np.clip(raw, act[0], act[1]).astype(np.int8)


def reshape(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """RESHAPE with the batch kept on axis 0: (N, ...) -> (N, *shape[1:]); any dtype.

    Data is untouched (TFLM copies bytes, quantization is shared), so int8 and float32
    graphs use the same kernel.
    """
    return x.reshape((x.shape[0], *tuple(int(d) for d in shape[1:])))


# ---------------------------------------------------------------------------- float32


def conv2d_float(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None,
    stride: tuple[int, int],
    padding: str,
    relu: bool,
) -> np.ndarray:
    """Float conv: x (N, H, W, Cin), weight (Cout, kh, kw, Cin) -> (N, Ho, Wo, Cout)."""
    cout, kh, kw, cin = weight.shape
    win = _windows(x.astype(np.float32), (kh, kw), stride, padding, 0.0)
    n, ho, wo = win.shape[:3]
    cols = win.transpose(0, 1, 2, 4, 5, 3).reshape(n * ho * wo, kh * kw * cin)
    out = cols @ weight.reshape(cout, -1).T.astype(np.float32)
    if bias is not None:
        out = out + bias.astype(np.float32)
    out = out.reshape(n, ho, wo, cout)
    return np.maximum(out, 0.0) if relu else out


def fully_connected_float(
    x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, relu: bool
) -> np.ndarray:
    """Float FC: x (N, Din) @ weight (Dout, Din).T + bias -> (N, Dout)."""
    out = x.astype(np.float32) @ weight.T.astype(np.float32)
    if bias is not None:
        out = out + bias.astype(np.float32)
    return np.maximum(out, 0.0) if relu else out


def max_pool_2d_float(
    x: np.ndarray, filt: tuple[int, int], stride: tuple[int, int], padding: str, relu: bool
) -> np.ndarray:
    """Float max pool over in-bounds taps: (N, H, W, C) -> (N, Ho, Wo, C)."""
    out = _windows(x.astype(np.float32), filt, stride, padding, -np.inf).max(axis=(-2, -1))
    return np.maximum(out, 0.0) if relu else out


def average_pool_2d_float(
    x: np.ndarray, filt: tuple[int, int], stride: tuple[int, int], padding: str, relu: bool
) -> np.ndarray:
    """Float average over in-bounds taps (padding excluded from the count)."""
    _, h, w, _ = x.shape
    total = _windows(x.astype(np.float32), filt, stride, padding, 0.0).sum(axis=(-2, -1))
    count = np.multiply.outer(
        _valid_counts(h, filt[0], stride[0], padding),
        _valid_counts(w, filt[1], stride[1], padding),
    )[None, :, :, None]
    out = (total / count).astype(np.float32)
    return np.maximum(out, 0.0) if relu else out


def add_float(a: np.ndarray, b: np.ndarray, relu: bool) -> np.ndarray:
    """Float broadcast add."""
    out = a.astype(np.float32) + b.astype(np.float32)
    return np.maximum(out, 0.0) if relu else out

