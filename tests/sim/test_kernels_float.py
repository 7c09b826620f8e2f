"""The kernels against a float64 numpy reference: float graphs agree to float32
rounding; each int8 op is within half an output LSB (plus TFLM's double-rounding
slack) of the exact real-valued result."""

from __future__ import annotations

import numpy as np
import pytest
from fw_graphs import add_graph, conv_graph, fc_graph, random_inputs
from graph_factory import (
    dequantize,
    dequantize_graph,
    float_forward,
    random_float_inputs,
    random_int8_inputs,
    tiny_block_graph,
    tiny_float_graph,
)

from ctxconv.blockgraph.ir import BlockGraph
from ctxconv.runtimes.reference import run_graph

# Half an LSB, plus TFLM's double rounding: SaturatingRoundingDoublingHighMul rounds to
# 2^-r output LSB before RoundingDivideByPOT(r) rounds again, adding up to 2^-(r+1) LSB
# (r = right shift, >= 5 for these scales).
HALF_LSB = 0.5 + 2.0**-6


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("contextual_add", [False, True])
def test_float_graph_matches_reference(seed: int, contextual_add: bool):
    g = tiny_float_graph(seed, with_pool=bool(seed % 2), contextual_add=contextual_add)
    x = random_float_inputs(g, 16, seed)
    ours = run_graph(g, x)["logits"]
    ref = float_forward(g, x)["logits"]
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)


def _real_in_lsb(graph: BlockGraph, x: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(int8 output of the kernels, exact float64 output in output-LSB units + zp)."""
    fg = dequantize_graph(graph)
    xf = {k: dequantize(graph.tensors[k], v) for k, v in x.items()}
    out = graph.tensors[graph.outputs[0]]
    real = float_forward(fg, xf)[out.name]
    q = out.quant
    return run_graph(graph, x)[out.name], real / float(q.scale[0]) + float(q.zero_point[0])


def _assert_within_half_lsb(q: np.ndarray, exact: np.ndarray, lo: int = -128, hi: int = 127):
    # the kernels clamp to the activation range; compare where the exact value is inside it
    inside = (exact > lo - 0.5) & (exact < hi + 0.5)
    assert inside.sum() >= 50, "test data saturates; choose other scales"
    err = np.abs(q.astype(np.float64) - exact)[inside]
    assert err.max() <= HALF_LSB, f"max error {err.max():.4f} LSB"
    assert np.all(q[exact <= lo - 0.5] == lo) and np.all(q[exact >= hi + 0.5] == hi)


@pytest.mark.parametrize("seed", range(6))
def test_conv_within_half_lsb(seed: int):
    g = conv_graph(
        seed,
        h=9,
        w=8,
        cin=4,
        cout=6,
        stride=(1 + seed % 2,) * 2,
        relu=False,
        per_channel=bool(seed % 2),
        padding=["SAME", "VALID"][seed % 2],
    )
    q, exact = _real_in_lsb(g, random_inputs(g, 8, seed))
    _assert_within_half_lsb(q, exact)


@pytest.mark.parametrize("seed", range(4))
def test_average_pool_within_half_lsb(seed: int):
    g = conv_graph(
        seed,
        h=9,
        w=7,
        relu=False,
        pool="AVERAGE_POOL_2D",
        pool_filter=(3, 2),
        pool_stride=(2, 2),
        pool_padding=["SAME", "VALID"][seed % 2],
    )
    x = random_inputs(g, 8, seed)
    conv_q = run_graph(BlockGraph(g.name, g.tensors, g.ops[:1], g.inputs, ["conv"]), x)["conv"]
    sub = BlockGraph("pool", g.tensors, g.ops[1:], ["conv"], ["pool"])
    q, exact = _real_in_lsb(sub, {"conv": conv_q})
    _assert_within_half_lsb(q, exact)
    # max pool of int8 values is exact
    sub.ops[0].kind = "MAX_POOL_2D"
    q, exact = _real_in_lsb(sub, {"conv": conv_q})
    np.testing.assert_allclose(q, exact, atol=1e-6)


@pytest.mark.parametrize("per_channel", [False, True])
def test_fully_connected_within_half_lsb(per_channel: bool):
    g = fc_graph(3, shape=(1, 4, 4, 3), dout=9, per_channel=per_channel)
    q, exact = _real_in_lsb(g, random_inputs(g, 16, 3))
    _assert_within_half_lsb(q, exact)


@pytest.mark.parametrize("seed", range(6))
def test_add_within_half_lsb(seed: int):
    g = add_graph(seed, b_shape=[(1, 5, 4, 3), (1, 1, 1, 3)][seed % 2], b_constant=seed >= 3)
    q, exact = _real_in_lsb(g, random_inputs(g, 8, seed))
    _assert_within_half_lsb(q, exact)


@pytest.mark.parametrize("seed", range(3))
def test_tiny_block_graph_close_to_float(seed: int):
    """Whole int8 block vs the same block in float on the same (dequantized) inputs:
    per-op half-LSB roundings accumulate to a few output LSBs."""
    g = tiny_block_graph(seed, contextual_add=bool(seed % 2))
    q, exact = _real_in_lsb(g, random_int8_inputs(g, 32, seed))
    err = np.abs(q - exact)
    assert err.max() <= 4.0, err.max()
    assert err.mean() <= 1.0, err.mean()


@pytest.mark.parametrize(
    "amax,bmax,k",
    [(255, 127, 300), (255, 127, 4000), (1 << 20, 1 << 20, 1 << 14)],
)
def test_exact_int_matmul_paths(amax: int, bmax: int, k: int):
    """The float32, float64 and integer paths all equal int64 matmul."""
    from ctxconv.blockgraph.ops.kernels import exact_int_matmul

    rng = np.random.default_rng(k)
    a = rng.integers(-amax, amax + 1, size=(7, k))
    b = rng.integers(-bmax, bmax + 1, size=(k, 5))
    a[0], b[:, 0] = amax, bmax  # worst case: all terms at the bound
    np.testing.assert_array_equal(exact_int_matmul(a, b), a @ b)
