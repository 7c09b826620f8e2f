"""How often each op of a block pipeline runs per image, and the MACs that makes.

Multipass runs the first contextual block's context-free ops (the conv of the image) once
and its ops that read the context once per candidate, and every later block once per
candidate (its input depends on the context); onepass, and every block before the first
contextual one, run each op once. A block whose scores weigh 0 in the class-score sum runs
without its head (the ops only its scores need). This is how the generated C runs them.
"""

from __future__ import annotations

from typing import Any

from ctxconv.blockgraph.ir import BlockGraph, context_dependent_ops, head_only_ops
from ctxconv.blockgraph.manifest import first_contextual
from ctxconv.blockgraph.pipeline import score_weights
from ctxconv.sim.cost import estimate_latency, op_work
from ctxconv.sim.profiles import McuProfile

MAC_OPS = ("CONV_2D", "FULLY_CONNECTED")


def op_runs(blocks: list[dict[str, Any]], index: int, graph: BlockGraph, k: int,
            mode: str) -> list[int]:
    """How often each op of block ``index`` runs per image in ``mode``."""
    first = first_contextual(blocks)
    if mode != "multipass" or first is None or index < first:
        runs = [1] * len(graph.ops)
    elif index > first:
        runs = [k] * len(graph.ops)
    else:
        runs = [k if dep else 1 for dep in context_dependent_ops(graph)]
    if score_weights({"blocks": blocks})[0][index]:
        return runs
    return [0 if head else n for n, head in zip(runs, head_only_ops(graph), strict=True)]


def graph_macs(graph: BlockGraph) -> int:
    """MACs of one pass through ``graph`` (conv and FC)."""
    return sum(op_work(graph, op) for op in graph.ops if op.kind in MAC_OPS)


def block_macs(blocks: list[dict[str, Any]], index: int, graph: BlockGraph, k: int,
               mode: str) -> int:
    """MACs block ``index`` executes per image in ``mode``."""
    runs = op_runs(blocks, index, graph, k, mode)
    return sum(t * op_work(graph, op) for t, op in zip(runs, graph.ops, strict=True)
               if op.kind in MAC_OPS)


def pipeline_macs(blocks: list[dict[str, Any]], graphs: list[BlockGraph], k: int,
                  mode: str) -> int:
    """MACs the whole pipeline executes per image in ``mode``."""
    return sum(block_macs(blocks, i, g, k, mode) for i, g in enumerate(graphs))


def block_cycles(blocks: list[dict[str, Any]], index: int, graph: BlockGraph, k: int,
                 mode: str, profile: McuProfile) -> float:
    """Modelled cycles block ``index`` takes per image in ``mode`` on ``profile``: each op's
    cost (``estimate_latency``) times how often the mode runs it."""
    runs = op_runs(blocks, index, graph, k, mode)
    ops = estimate_latency(graph, profile).op_cycles
    return sum(n * cycles for n, (_, _, cycles) in zip(runs, ops, strict=True))
