"""The activation peak of ctxconv's own block runtime, beside TFLM's arena.

Two differences from TFLM's plan, both exact for these graphs: RESHAPE is a view of its
input (no buffer), and MAX_POOL_2D with stride = filter runs in place (each output
pixel, in raster order, is written no later than the first input pixel it reads, so the
pooled map overwrites the head of its input buffer: during the pool only the input's
bytes are live, afterwards only the pooled map's). Buffers are then placed by the same
greedy-by-size planner as TFLM's; there is no interpreter overhead (tail).
"""

from __future__ import annotations

from ctxconv.blockgraph.ir import BlockGraph
from ctxconv.memory.greedy import Buffer, greedy_offsets


def own_activation_peak(graph: BlockGraph) -> int:
    """Peak activation bytes of one block with views and in-place pooling."""
    alias: dict[str, str] = {}  # tensor -> the tensor whose buffer it lives in
    in_place: set[str] = set()
    for op in graph.ops:
        src, dst = op.inputs[0], op.outputs[0]
        if op.kind == "RESHAPE":
            alias[dst] = alias.get(src, src)
        elif op.kind == "MAX_POOL_2D" and tuple(op.options["filter"]) == tuple(
            op.options["stride"]
        ):
            in_place.add(dst)
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    size: dict[str, int] = {}

    def touch(name: str, step: int) -> None:
        root = alias.get(name, name)
        t = graph.tensors[name]
        if t.is_constant:
            return
        first[root] = min(first.get(root, step), step)
        last[root] = max(last.get(root, step), step)
        size[root] = max(size.get(root, 0), graph.tensors[root].nbytes)

    for name in graph.inputs:
        touch(name, 0)
    for step, op in enumerate(graph.ops, start=1):
        for name in op.inputs:
            touch(name, step)
        for name in op.outputs:
            touch(name, step + 1 if name in in_place else step)
    for name in graph.outputs:
        touch(name, len(graph.ops))
    roots = sorted(size)
    _, peak = greedy_offsets([Buffer(size[r], first[r], last[r]) for r in roots])
    return peak
