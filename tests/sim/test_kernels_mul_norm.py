"""MUL, MEAN and L2_NORMALIZATION: our numpy kernels against TFLite Micro (0 LSB), LiteRT's
reference kernels (0 LSB) and onnxruntime (<= 1 LSB); the .tflite reader round trip."""

from __future__ import annotations

import numpy as np
import pytest

from ctxconv.blockgraph.ir import BlockGraph, Op, Quant, Tensor
from ctxconv.blockgraph.onnx import write_onnx
from ctxconv.blockgraph.tflite.reader import read_tflite
from ctxconv.blockgraph.tflite.writer import write_tflite
from ctxconv.runtimes.reference import run_graph
from ctxconv.runtimes.runners import LiteRTRunner, OnnxRunner, TFLMRunner


def _act(name: str, shape: tuple[int, ...], scale: float, zp: int) -> Tensor:
    return Tensor(name, shape, "int8", Quant.per_tensor(scale, zp))


def _graph(kind: str, ins: list[Tensor], out: Tensor, **options) -> BlockGraph:
    tensors = {t.name: t for t in [*ins, out]}
    inputs = list(dict.fromkeys(t.name for t in ins))
    return BlockGraph(kind.lower(), tensors, [Op(kind, [t.name for t in ins], [out.name],
                                                 options)], inputs, [out.name])


def _inputs(g: BlockGraph, n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.integers(-128, 128, (n, *g.tensors[name].shape[1:])).astype(np.int8)
            for name in g.inputs}


def check_runtimes(g: BlockGraph, inputs: dict[str, np.ndarray]) -> None:
    data = write_tflite(g)
    back = read_tflite(data)
    assert [(op.kind, op.options) for op in back.ops] == [(op.kind, op.options) for op in g.ops]
    ours = run_graph(g, inputs)
    tflm = TFLMRunner(data, arena_size=1 << 20, check_arena=False).run(inputs)
    litert = LiteRTRunner(data, reference_kernels=True).run(inputs)
    onnx = OnnxRunner(write_onnx(g)).run(inputs)
    for name in g.outputs:
        shape = ours[name].shape
        assert ours[name].dtype == np.int8
        assert np.array_equal(ours[name], tflm[name].reshape(shape)), "TFLM"
        assert np.array_equal(ours[name], litert[name].reshape(shape)), "LiteRT"
        diff = np.abs(ours[name].astype(np.int32) - onnx[name].reshape(shape)).max()
        assert diff <= 1, f"onnxruntime differs by {diff} LSB"


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize(("b_shape", "scales"), [
    ((1, 1, 1, 3), (0.05, 0.01, 0.03)),  # FiLM: per-channel scale broadcast over H, W
    ((1, 4, 5, 3), (0.02, 0.2, 0.5)),
])
def test_mul(relu, b_shape, scales):
    a = _act("a", (1, 4, 5, 3), scales[0], -10)
    b = _act("b", b_shape, scales[1], -128)
    g = _graph("MUL", [a, b], _act("y", (1, 4, 5, 3), scales[2], 5), relu=relu)
    check_runtimes(g, _inputs(g, 24, seed=len(b_shape) + relu))


def test_mul_square():
    a = _act("a", (1, 6, 6, 4), 0.05, -128)
    g = _graph("MUL", [a, a], _act("y", (1, 6, 6, 4), 0.05**2 * 255 / 4, -128), relu=False)
    check_runtimes(g, _inputs(g, 24, seed=3))


@pytest.mark.parametrize(("shape", "axes", "keep"), [
    ((1, 48), (1,), True), ((1, 7), (1,), True), ((1, 1000), (1,), True),
    ((1, 4, 4, 3), (1, 2, 3), False), ((1, 4, 4, 3), (1, 2), True),
])
@pytest.mark.parametrize("out_scale", [0.003, 0.3])
def test_mean(shape, axes, keep, out_scale):
    out_shape = (tuple(1 if i in axes else d for i, d in enumerate(shape)) if keep
                 else tuple(d for i, d in enumerate(shape) if i not in axes))
    g = _graph("MEAN", [_act("a", shape, 0.02, -128)], _act("y", out_shape, out_scale, -100),
               axes=axes, keep_dims=keep)
    check_runtimes(g, _inputs(g, 30, seed=len(shape)))


@pytest.mark.parametrize("depth", [1, 2, 5, 64, 784, 3000])
def test_l2_normalization(depth):
    g = _graph("L2_NORMALIZATION", [_act("a", (1, depth), 0.02, -7)],
               _act("y", (1, depth), 1 / 128, 0))
    x = _inputs(g, 40, seed=depth)
    rng = np.random.default_rng(depth)
    x["a"][0] = -7  # all at the zero point: TFLM's largest multiplier
    x["a"][1, :] = -7
    x["a"][1, 0] = -6  # sum of squares 1
    x["a"][2] = np.where(rng.random(depth) < 0.9, -7, x["a"][2])  # sparse
    check_runtimes(g, x)


def test_l2_normalization_output_quantization_is_fixed():
    g = _graph("L2_NORMALIZATION", [_act("a", (1, 8), 0.02, 0)], _act("y", (1, 8), 0.01, 0))
    with pytest.raises(ValueError, match="int8 output 'y' must have scale 1/128 and zero "
                                         "point 0"):
        write_tflite(g)


def test_mean_over_the_batch_axis_is_rejected():
    g = _graph("MEAN", [_act("a", (1, 8), 0.02, 0)], _act("y", (8,), 0.02, 0), axes=(0,),
               keep_dims=False)
    with pytest.raises(ValueError, match=r"op MEAN: axes \(0,\) must be distinct and in 1..1"):
        write_tflite(g)
