"""Execute a ``BlockGraph`` on a batch with the kernels, like TFLM's interpreter would.

``compile_graph`` does the work of TFLM's Prepare step once through each op's
``prepare`` (requantization multipliers, activation ranges, padding), so repeated ``run``
calls on batches only pay for each op's ``reference`` arithmetic. Graph tensors carry
batch 1 on axis 0; at run time axis 0 is the batch N of the arrays passed in.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ctxconv.blockgraph import ops
from ctxconv.blockgraph.ir import BlockGraph, Op


class CompiledGraph:
    """A block graph prepared for repeated batched execution."""

    def __init__(self, graph: BlockGraph) -> None:
        ops.validate_structure(graph)
        self.graph = graph
        self._steps: list[tuple[Op, Any]] = [(op, self._prepare(op)) for op in graph.ops]

    # -- preparation (TFLM Prepare) -------------------------------------------------

    def _prepare(self, op: Op) -> Any:
        """The op's checks and its Params (``ops.<op>.prepare``)."""
        ops.validate(self.graph, op)
        return ops.prepare(self.graph, op)

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
        for op, params in self._steps:
            if ops.op_module(op.kind).BROADCASTS:  # align both operands to the output
                rank = len(g.tensors[op.outputs[0]].shape)
                args = [_align(self._value(env, n), not g.tensors[n].is_constant, rank)
                        for n in op.inputs[:2]]
            else:  # weights and biases live in the op's Params
                args = [self._value(env, op.inputs[0])]
            env[op.outputs[0]] = ops.reference(op.kind, params, args)
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
