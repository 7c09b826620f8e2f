"""Which exported blocks on-device training can model, and a clear error for the others.

On-device training models a block as optional max pool -> conv (+ a context bias) -> ReLU
-> a goodness head linear in the context. FiLM context scales, energy goodness and per-sample
L2 normalisation export (as MUL, MEAN and the ``l2norm`` op) but are not modelled here.
"""

from __future__ import annotations

from typing import Any

from ctxconv.blockgraph import ops
from ctxconv.blockgraph.ir import BlockGraph
from ctxconv.blockgraph.manifest import GOODNESS_TENSOR

MODELLED = ("max pool, conv with a context bias (ADD), ReLU and a goodness head linear in the "
            "context (model options injection=bias, goodness=linear, norm=batch or none)")


class UnsupportedBlockError(ValueError):
    """An exported block has a layer that on-device training does not model."""


def unsupported_layers(block: dict[str, Any], graph: BlockGraph | None) -> list[str]:
    """The block's layers on-device training does not model, as words (empty: trainable)."""
    found: list[str] = []

    def add(what: str) -> None:
        if what not in found:
            found.append(what)

    for op in graph.ops if graph is not None else []:
        if op.kind == "MUL":
            square = len(set(op.inputs[:2])) == 1
            add("an energy goodness (MUL of the features by themselves, MEAN)" if square
                else "a FiLM context scale (MUL)")
        elif op.kind == "MEAN":
            add("an energy goodness (MUL of the features by themselves, MEAN)")
        elif ops.normalizes_per_sample(op.kind):
            add(f"a per-sample L2 normalisation ({op.kind})")
    if any(o.get("name") == GOODNESS_TENSOR for o in block.get("outputs", [])):
        add("an energy goodness (MUL of the features by themselves, MEAN)")
    return found


def require_trainable(block: dict[str, Any], graph: BlockGraph | None, index: int) -> None:
    """Raise UnsupportedBlockError naming what block ``index`` has that cannot be trained."""
    found = unsupported_layers(block, graph)
    if found:
        raise UnsupportedBlockError(
            f"block {index} ({block.get('name', graph.name if graph else '?')}) cannot be "
            f"trained on the device: it has {' and '.join(found)}; on-device training models "
            f"{MODELLED}")
