"""MACs per image per mode: what the generated C executes, block by block."""

from __future__ import annotations

from fw_graphs import conv_graph

from ctxconv.sim.passes import graph_macs, pipeline_macs


def _blocks(contextual: list[bool]) -> list[dict]:
    return [{"name": f"block{i}", "contextual": c, "score_block": False}
            for i, c in enumerate(contextual)]


def test_multipass_runs_later_blocks_once_per_class():
    graphs = [conv_graph(1, cin=1, cout=4), conv_graph(2, cin=4, cout=4)]
    k = 10
    one = [graph_macs(g) for g in graphs]
    # context-free pipeline: the modes coincide
    assert pipeline_macs(_blocks([False, False]), graphs, k, "multipass") == sum(one)
    # the first block is contextual: its ops that do not read the context (here: all of
    # them, the graphs have no context input) run once, every later block once per class
    first = _blocks([True, False])
    assert pipeline_macs(first, graphs, k, "onepass") == sum(one)
    assert pipeline_macs(first, graphs, k, "multipass") == one[0] + k * one[1]
