"""Throughput of the batched kernels on a 3-block 28x28 model (32..128 channels)."""

from __future__ import annotations

import time

from fw_graphs import conv_graph, random_inputs

from ctxconv.runtimes.reference import compile_graph


def test_three_block_model_throughput():
    blocks = [
        compile_graph(conv_graph(1, h=28, w=28, cin=1, cout=32, pool="MAX_POOL_2D")),
        compile_graph(conv_graph(2, h=14, w=14, cin=32, cout=64, pool="MAX_POOL_2D")),
        compile_graph(conv_graph(3, h=7, w=7, cin=64, cout=128, pool="MAX_POOL_2D")),
    ]
    n = 256
    x = random_inputs(blocks[0].graph, n, 0)["x"]
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        h = x
        for b in blocks:
            h = b.run({"x": h})[b.graph.outputs[0]]
        best = min(best, time.perf_counter() - start)
    assert h.shape == (n, 3, 3, 128)
    assert n / best > 200, f"{n / best:.0f} images/s"
