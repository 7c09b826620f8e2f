"""Execute a ``BlockGraph`` on a batch with the kernels, like TFLM's interpreter would.

``compile_graph`` does the work of TFLM's Prepare step once (requantization
multipliers, activation ranges, padding), so repeated ``run`` calls on batches only
pay for the arithmetic. Graph tensors carry batch 1 on axis 0; at run time axis 0 is
the batch N of the arrays passed in.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ctxconv.blockgraph.fixedpoint import (
    activation_range_int8,
    channel_multipliers,
    quantize_multiplier,
)
from ctxconv.blockgraph.fixedpoint import quant_scale as _scale
from ctxconv.blockgraph.ir import BlockGraph, Op, Quant, Tensor
from ctxconv.blockgraph.ops import kernels as K
from ctxconv.blockgraph.ops import kernels_mul_norm as KM

Kernel = Callable[[list[np.ndarray]], np.ndarray]


def _zp(q: Quant | None) -> int:
    return 0 if q is None else int(q.zero_point[0])


def _pair(v: object, what: str) -> tuple[int, int]:
    try:
        a, b = (int(x) for x in v)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a pair (h, w), got {v!r}") from None
    return a, b




class CompiledGraph:
    """A block graph prepared for repeated batched execution."""

    def __init__(self, graph: BlockGraph) -> None:
        graph.validate()
        self.graph = graph
        self._steps: list[tuple[Op, Kernel]] = [(op, self._prepare(op)) for op in graph.ops]

    # -- preparation (TFLM Prepare) -------------------------------------------------

    def _t(self, name: str) -> Tensor:
        return self.graph.tensors[name]

    def _prepare(self, op: Op) -> Kernel:
        x = self._t(op.inputs[0])
        out = self._t(op.outputs[0])
        what = f"block {self.graph.name!r} op {op.kind} -> {out.name!r}"
        is_int8 = x.dtype == "int8"
        if not is_int8 and x.dtype != "float32" and op.kind != "RESHAPE":
            raise ValueError(f"{what}: unsupported input dtype {x.dtype}")
        relu = bool(op.options.get("relu", False))
        act = (0, 0)  # int8 clamp range from the output's quantization (TFLM Prepare)
        if is_int8:
            act = activation_range_int8(relu, _scale(out.quant, what), _zp(out.quant))
        o = op.options
        if op.kind in ("CONV_2D", "FULLY_CONNECTED"):
            w = self._t(op.inputs[1])
            b = self._t(op.inputs[2]) if len(op.inputs) > 2 and op.inputs[2] else None
            if w.data is None or (b is not None and b.data is None):
                raise ValueError(f"{what}: weight and bias must be constant tensors")
            wd = w.data
            bd = None if b is None else b.data
        if op.kind == "CONV_2D":
            stride = _pair(o["stride"], f"{what} stride")
            pad = str(o["padding"])
            if not is_int8:
                return lambda xs: K.conv2d_float(xs[0], wd, bd, stride, pad, relu)
            mult, shift = channel_multipliers(x.quant, w.quant, out.quant, wd.shape[0], what)
            in_zp, out_zp = _zp(x.quant), _zp(out.quant)
            return lambda xs: K.conv2d_int8(
                xs[0], wd, bd, in_zp, out_zp, mult, shift, act, stride, pad
            )
        if op.kind == "FULLY_CONNECTED":
            din = wd.shape[1]
            if not is_int8:
                return lambda xs: K.fully_connected_float(xs[0].reshape(-1, din), wd, bd, relu)
            mult, shift = channel_multipliers(x.quant, w.quant, out.quant, wd.shape[0], what)
            in_zp, out_zp, w_zp = _zp(x.quant), _zp(out.quant), _zp(w.quant)
            return lambda xs: K.fully_connected_int8(
                xs[0].reshape(-1, din), wd, bd, in_zp, w_zp, out_zp, mult, shift, act
            )
        if op.kind in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
            filt = _pair(o["filter"], f"{what} filter")
            stride = _pair(o["stride"], f"{what} stride")
            pad = str(o["padding"])
            if op.kind == "MAX_POOL_2D":
                if is_int8:
                    return lambda xs: K.max_pool_2d_int8(xs[0], filt, stride, pad, act)
                return lambda xs: K.max_pool_2d_float(xs[0], filt, stride, pad, relu)
            if is_int8:
                return lambda xs: K.average_pool_2d_int8(xs[0], filt, stride, pad, act)
            return lambda xs: K.average_pool_2d_float(xs[0], filt, stride, pad, relu)
        if op.kind == "ADD":
            return self._prepare_add(op, relu, act, what)
        if op.kind == "RESHAPE":
            shape = tuple(out.shape)
            return lambda xs: K.reshape(xs[0], shape)
        if op.kind == "MUL":
            return self._prepare_mul(op, relu, act, what)
        if op.kind == "MEAN":
            axes = tuple(int(a) for a in o["axes"])
            keep = bool(o["keep_dims"])
            if 0 in axes:
                raise ValueError(f"{what}: MEAN over the batch axis 0 is not a block op")
            if not is_int8:
                return lambda xs: KM.mean_float(xs[0], axes, keep)
            m, s = quantize_multiplier(_scale(x.quant, what) / _scale(out.quant, what))
            in_zp, out_zp = _zp(x.quant), _zp(out.quant)
            return lambda xs: KM.mean_int8(xs[0], axes, keep, in_zp, out_zp, m, s)
        if op.kind == "L2_NORMALIZATION":
            if not is_int8:
                return lambda xs: KM.l2_normalization_float(xs[0])
            in_zp = _zp(x.quant)
            return lambda xs: KM.l2_normalization_int8(xs[0], in_zp)
        raise ValueError(f"{what}: op kind not supported by the simulator")

    def _prepare_add(self, op: Op, relu: bool, act: tuple[int, int], what: str) -> Kernel:
        a, b, out = self._t(op.inputs[0]), self._t(op.inputs[1]), self._t(op.outputs[0])
        rank = len(out.shape)
        a_batched, b_batched = not a.is_constant, not b.is_constant

        def operands(xs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
            return _align(xs[0], a_batched, rank), _align(xs[1], b_batched, rank)

        if a.dtype != "int8":
            return lambda xs: K.add_float(*operands(xs), relu)
        a_s, b_s = _scale(a.quant, f"{what} input a"), _scale(b.quant, f"{what} input b")
        out_s = _scale(out.quant, f"{what} output")
        left_shift = 20
        twice_max = 2.0 * max(a_s, b_s)
        a_m = quantize_multiplier(a_s / twice_max)
        b_m = quantize_multiplier(b_s / twice_max)
        o_m = quantize_multiplier(twice_max / ((1 << left_shift) * out_s))
        for m in (a_m, b_m, o_m):
            if m[1] > 0:
                raise ValueError(f"{what}: int8 ADD needs output_scale >= 2^-20 * max input scale")
        a_zp, b_zp, o_zp = _zp(a.quant), _zp(b.quant), _zp(out.quant)
        return lambda xs: K.add_int8(
            *operands(xs), a_zp, b_zp, o_zp, a_m, b_m, o_m, act, left_shift
        )

    def _prepare_mul(self, op: Op, relu: bool, act: tuple[int, int], what: str) -> Kernel:
        a, b, out = self._t(op.inputs[0]), self._t(op.inputs[1]), self._t(op.outputs[0])
        rank = len(out.shape)
        a_batched, b_batched = not a.is_constant, not b.is_constant

        def operands(xs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
            return _align(xs[0], a_batched, rank), _align(xs[1], b_batched, rank)

        if a.dtype != "int8":
            return lambda xs: KM.mul_float(*operands(xs), relu)
        real = (_scale(a.quant, f"{what} input a") * _scale(b.quant, f"{what} input b")
                / _scale(out.quant, f"{what} output"))
        m, s = quantize_multiplier(real)
        a_zp, b_zp, o_zp = _zp(a.quant), _zp(b.quant), _zp(out.quant)
        return lambda xs: KM.mul_int8(*operands(xs), a_zp, b_zp, o_zp, m, s, act)

    # -- execution --------------------------------------------------------------------

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run all ops in order on a batch. ``inputs``: name -> (N, *shape[1:])."""
        g = self.graph
        env: dict[str, np.ndarray] = {}
        batch = None
        for name in g.inputs:
            if name not in inputs:
                raise ValueError(f"block {g.name!r}: missing input {name!r}")
            t = g.tensors[name]
            arr = np.asarray(inputs[name])
            if arr.ndim != len(t.shape) or tuple(arr.shape[1:]) != tuple(t.shape[1:]):
                raise ValueError(
                    f"block {g.name!r}: input {name!r} has shape {arr.shape}, "
                    f"expected (N, {', '.join(str(d) for d in t.shape[1:])})"
                )
            if arr.dtype != np.dtype(t.dtype):
                raise ValueError(
                    f"block {g.name!r}: input {name!r} has dtype {arr.dtype}, expected {t.dtype}"
                )
            if batch is not None and arr.shape[0] != batch:
                raise ValueError(f"block {g.name!r}: inputs disagree on batch size")
            batch = arr.shape[0]
            env[name] = arr
        for op, kernel in self._steps:
            args = [self._value(env, name) for name in op.inputs[:2]]
            env[op.outputs[0]] = kernel(args)
        return {name: env[name] for name in g.outputs}

    def _value(self, env: dict[str, np.ndarray], name: str) -> np.ndarray:
        if name in env:
            return env[name]
        t = self.graph.tensors[name]
        if t.data is None:
            raise ValueError(f"block {self.graph.name!r}: tensor {name!r} read before written")
        return t.data


def _align(x: np.ndarray, batched: bool, rank: int) -> np.ndarray:
    """Align an ADD/MUL operand to the output rank: batch stays on axis 0, graph dims right-aligned.

    A batched (N, *s) operand of lower rank becomes (N, 1, ..., 1, *s); constants keep
    TFLite/numpy right-aligned broadcasting.
    """
    if not batched or x.ndim == rank:
        return x
    return x.reshape((x.shape[0],) + (1,) * (rank - x.ndim) + x.shape[1:])


def compile_graph(graph: BlockGraph) -> CompiledGraph:
    """Prepare ``graph`` once for repeated batched execution."""
    return CompiledGraph(graph)


def run_graph(graph: BlockGraph, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run ``graph`` on a batch: ``inputs`` name -> (N, *shape[1:]) arrays; returns outputs."""
    return CompiledGraph(graph).run(inputs)
