"""The numpy kernels against TFLite Micro's reference kernels: 0 LSB difference."""

from __future__ import annotations

import numpy as np
import pytest
from fw_graphs import add_graph, chain_graph, conv_graph, fc_graph, random_inputs
from graph_factory import random_int8_inputs, tiny_block_graph

from ctxconv.blockgraph.fixedpoint import quantize_multiplier
from ctxconv.blockgraph.ir import BlockGraph, Quant
from ctxconv.blockgraph.tflite.writer import write_tflite
from ctxconv.runtimes.reference import run_graph
from ctxconv.runtimes.runners import TFLMRunner

N = 6  # images per graph


def assert_bit_exact(graph: BlockGraph, inputs: dict[str, np.ndarray] | None = None) -> None:
    inputs = inputs if inputs is not None else random_inputs(graph, N, seed=len(graph.tensors))
    ours = run_graph(graph, inputs)
    ref = TFLMRunner(write_tflite(graph), arena_size=1 << 21, check_arena=False).run(inputs)
    for name in graph.outputs:
        expect = ref[name].reshape(ours[name].shape)
        diff = np.abs(ours[name].astype(np.int32) - expect.astype(np.int32))
        assert diff.max() == 0, f"{graph.name}/{name}: {int((diff > 0).sum())} values differ"
        assert ours[name].dtype == np.int8


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("with_pool", [True, False])
@pytest.mark.parametrize("contextual_add", [False, True])
@pytest.mark.parametrize("fc_per_channel", [False, True])
def test_tiny_block_graph(seed: int, with_pool: bool, contextual_add: bool, fc_per_channel: bool):
    g = tiny_block_graph(seed, with_pool, contextual_add, fc_per_channel)
    assert_bit_exact(g, random_int8_inputs(g, N, seed))


def _random_conv_kwargs(rng: np.random.Generator) -> dict:
    return dict(
        h=int(rng.integers(3, 14)),
        w=int(rng.integers(3, 14)),  # odd and even sizes
        cin=int(rng.integers(1, 9)),
        cout=int(rng.integers(1, 11)),
        k=(int(rng.integers(1, 6)), int(rng.integers(1, 4))),
        stride=(int(rng.integers(1, 3)), int(rng.integers(1, 3))),
        padding=str(rng.choice(["SAME", "VALID"])),
        relu=bool(rng.integers(0, 2)),
        per_channel=bool(rng.integers(0, 2)),
    )


@pytest.mark.parametrize("seed", range(24))
def test_conv_pool_random(seed: int):
    rng = np.random.default_rng(1000 + seed)
    kw = _random_conv_kwargs(rng)
    kw["k"] = (min(kw["k"][0], kw["h"]), min(kw["k"][1], kw["w"]))
    pool = [None, "MAX_POOL_2D", "AVERAGE_POOL_2D"][seed % 3]
    pool_kw = dict(
        pool_filter=(int(rng.integers(1, 4)), int(rng.integers(1, 4))),
        pool_stride=(int(rng.integers(1, 3)), int(rng.integers(1, 3))),
        pool_padding=str(rng.choice(["SAME", "VALID"])),
    )
    try:
        g = conv_graph(seed, pool=pool, **kw, **pool_kw)
    except ValueError:  # VALID window larger than the map: use SAME for the pool
        g = conv_graph(seed, pool=pool, **kw, **{**pool_kw, "pool_padding": "SAME"})
    assert_bit_exact(g)


@pytest.mark.parametrize(
    "kw",
    [
        dict(h=7, w=5, k=(3, 3), stride=(2, 2), padding="SAME"),
        dict(h=8, w=9, k=(3, 3), stride=(2, 2), padding="SAME"),
        dict(h=9, w=8, k=(2, 2), stride=(2, 2), padding="SAME"),  # even filter: odd pad after
        dict(h=9, w=7, k=(3, 3), stride=(2, 2), padding="VALID"),
        dict(h=5, w=5, k=(5, 5), stride=(1, 1), padding="VALID"),  # 1x1 output
        dict(h=1, w=6, k=(1, 3), stride=(1, 1), padding="SAME"),
        dict(h=28, w=28, cin=1, cout=32, k=(3, 3), stride=(1, 1), padding="SAME"),
    ],
)
def test_conv_geometry(kw: dict):
    for pool in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
        g = conv_graph(
            7, pool=pool, pool_filter=(3, 3), pool_stride=(2, 2), pool_padding="SAME", **kw
        )
        assert_bit_exact(g)


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_fully_connected(per_channel: bool, seed: int):
    shape = (1, 1 + seed, 3, 5)
    assert_bit_exact(
        fc_graph(seed, shape=shape, dout=3 + 2 * seed, relu=bool(seed % 2), per_channel=per_channel)
    )


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(
    "b_shape,b_constant",
    [((1, 5, 4, 3), False), ((1, 1, 1, 3), False), ((1, 1, 1, 3), True), ((1, 5, 4, 3), True)],
)
def test_add(seed: int, b_shape: tuple, b_constant: bool):
    assert_bit_exact(add_graph(seed, b_shape=b_shape, relu=bool(seed % 2), b_constant=b_constant))


@pytest.mark.parametrize("seed", range(8))
def test_chains(seed: int):
    g = chain_graph(
        seed,
        size=(5 + seed, 4 + 2 * seed),
        cin=1 + seed % 3,
        n_blocks=1 + seed % 3,
        context=bool(seed % 2),
        head=bool(seed % 4),
    )
    assert_bit_exact(g)


def _conv_with_scales(in_s: float, w_s: float, out_s: float, w_range: int, x_range: int):
    """1x1 conv whose effective multiplier is in_s * w_s / out_s, with small operands."""
    g = conv_graph(11, h=6, w=5, cin=3, cout=3, k=(1, 1), relu=False)
    t, rng = g.tensors, np.random.default_rng(5)
    zp = int(t["x"].quant.zero_point[0])
    t["x"].quant = Quant.per_tensor(in_s, zp)
    t["w"].quant.scale = np.full(3, w_s, np.float32)
    t["w"].data = rng.integers(-w_range, w_range + 1, size=t["w"].shape).astype(np.int8)
    t["b"].quant.scale = (np.float32(in_s) * t["w"].quant.scale).astype(np.float32)
    t["b"].data = rng.integers(-w_range, w_range + 1, size=3).astype(np.int32)
    t["conv"].quant = Quant.per_tensor(out_s, 3)
    x = np.clip(zp + rng.integers(-x_range, x_range + 1, size=(8, 6, 5, 3)), -128, 127)
    return g, {"x": x.astype(np.int8)}


def test_requantization_edge_cases():
    f32 = lambda v: float(np.float32(v))  # noqa: E731
    # frexp mantissa rounds up to 2^31: TFLite halves it and bumps the exponent
    in_s, w_s, out_s = f32((1 + 2**-23) * 2**-6), f32((1 - 2**-23) * 2**-7), 2.0**-9
    m = float(np.float64(in_s) * np.float64(w_s) / np.float64(out_s))
    assert quantize_multiplier(m) == (1 << 30, -3)
    assert_bit_exact(*_conv_with_scales(in_s, w_s, out_s, 10, 5))
    assert_bit_exact(*_conv_with_scales(0.05, 0.05, 0.0001, 1, 2))  # multiplier > 1: left shift
    assert_bit_exact(*_conv_with_scales(1e-6, 1e-6, 1000.0, 100, 100))  # underflow to 0
    assert_bit_exact(*_conv_with_scales(0.05, 0.01, 0.05 * 0.01 * 0.5, 3, 20))  # exact ties
