"""The C elementwise kernels repeat a trailing block of the second operand; a broadcast
they cannot compute (e.g. over a middle axis) is refused at generation, not miscomputed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sim"))

from fw_graphs import add_graph  # noqa: E402

from ctxconv.blockgraph.ops import add, mul  # noqa: E402


@pytest.mark.parametrize("kind, module", [("ADD", add), ("MUL", mul)])
@pytest.mark.parametrize("b_shape, ok", [
    ((1, 5, 4, 3), True),   # same shape
    ((1, 1, 1, 3), True),   # per channel
    ((1, 1, 4, 3), True),   # a trailing block
    ((1, 5, 1, 3), False),  # over the middle axis: not a trailing block
])  # fmt: skip
def test_only_a_trailing_block_broadcasts(kind, module, b_shape, ok):
    graph = add_graph(3, b_shape=b_shape, b_constant=True, kind=kind)
    op = graph.ops[0]
    params = module.prepare(graph, op)
    if ok:
        module.check_c(graph, op, params)
    else:
        with pytest.raises(ValueError, match="trailing block"):
            module.check_c(graph, op, params)
