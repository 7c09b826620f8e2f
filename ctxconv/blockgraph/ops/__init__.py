"""One module per op: checks, run-time parameters, numpy reference, work, scratch, in place.

Each module (``conv2d``, ``fully_connected``, ``pool2d``, ``add``, ``mul``, ``mean``,
``l2norm``, ``reshape``) maps the op kinds it serves to the options each reads in ``KINDS``
(the registry of supported ops is the union) and defines
``validate(graph, op)``, ``prepare(graph, op) -> Params``, ``reference(params, inputs)``,
``macs(graph, op)``, ``c_scratch_bytes(graph, op)`` and ``in_place(graph, op)``, plus
``BROADCASTS`` (two operands broadcast against each other), ``tflm_scratch(graph, op)``
where TFLM's reference kernel requests scratch buffers, ``optimized_scratch(graph, op,
model)`` where an optimised kernel library does, and the op's TFLM persistent bytes
(``TFLM_BUILTIN_BYTES``, ``TFLM_OP_DATA_BYTES``), and ``PER_SAMPLE_NORM`` with
``unit_rms_lsb(graph, op)`` where the op rescales each sample to unit norm. Callers
dispatch through ``op_module`` or the predicates here, never on the kind themselves.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from ctxconv.blockgraph.ir import BlockGraph, Op
from ctxconv.blockgraph.ops import (
    add,
    conv2d,
    fully_connected,
    l2norm,
    mean,
    mul,
    pool2d,
    reshape,
)

MODULES: tuple[ModuleType, ...] = (conv2d, fully_connected, pool2d, add, mul, mean, l2norm,
                                   reshape)
#: op kind -> its module
REGISTRY: dict[str, ModuleType] = {kind: m for m in MODULES for kind in m.KINDS}
#: every op kind a block graph may contain
SUPPORTED: tuple[str, ...] = tuple(sorted(REGISTRY))


def op_module(kind: str) -> ModuleType:
    """The module of op ``kind``; ValueError for a kind without one."""
    try:
        return REGISTRY[kind]
    except KeyError:
        raise ValueError(f"op {kind!r} has no implementation; supported: "
                         f"{sorted(REGISTRY)}") from None


def normalizes_per_sample(kind: str) -> bool:
    """Whether op ``kind`` rescales each sample to unit norm (its module's
    ``PER_SAMPLE_NORM``); such a module gives ``unit_rms_lsb(graph, op)``, its output's RMS
    value in LSB. False for a kind without a module."""
    return bool(getattr(REGISTRY.get(kind), "PER_SAMPLE_NORM", False))


def unit_rms_lsb(graph: BlockGraph, op: Op) -> float:
    """RMS output value, in LSB, of a per-sample normalising op (``normalizes_per_sample``)."""
    return float(op_module(op.kind).unit_rms_lsb(graph, op))


def check_kind(graph: BlockGraph, op: Op) -> None:
    """The op is supported and carries every option its module reads (ValueError)."""
    if op.kind not in REGISTRY:
        raise ValueError(f"block {graph.name!r}: op {op.kind!r} is not supported; "
                         f"supported: {list(SUPPORTED)}")
    missing = [k for k in REGISTRY[op.kind].KINDS[op.kind] if k not in op.options]
    if missing:
        raise ValueError(f"block {graph.name!r}: op {op.kind} lacks options {missing}")


def validate(graph: BlockGraph, op: Op) -> None:
    """The op's own checks (ValueError naming the problem)."""
    op_module(op.kind).validate(graph, op)


def validate_structure(graph: BlockGraph) -> None:
    """``graph.validate()`` (tensors and endpoints), then every op's kind and options."""
    graph.validate()
    for op in graph.ops:
        check_kind(graph, op)


def validate_graph(graph: BlockGraph) -> None:
    """``validate_structure``, then every op's own checks."""
    validate_structure(graph)
    for op in graph.ops:
        validate(graph, op)


def prepare(graph: BlockGraph, op: Op) -> Any:
    """The op's run-time parameters."""
    return op_module(op.kind).prepare(graph, op)


def reference(kind: str, params: Any, inputs: list[np.ndarray]) -> np.ndarray:
    """The numpy reference of op ``kind`` on a batch."""
    return op_module(kind).reference(params, inputs)


def macs(graph: BlockGraph, op: Op) -> int:
    """The op's work: MACs, window taps or elements, as its module counts them."""
    return int(op_module(op.kind).macs(graph, op))


def c_scratch_bytes(graph: BlockGraph, op: Op) -> int:
    """Scratch bytes the op's C kernel needs."""
    return int(op_module(op.kind).c_scratch_bytes(graph, op))


def in_place(graph: BlockGraph, op: Op) -> bool:
    """Whether the op's C kernel may write its output over its first input."""
    return bool(op_module(op.kind).in_place(graph, op))


def tflm_scratch(graph: BlockGraph, op: Op) -> list[int]:
    """Bytes of each scratch buffer TFLM's reference kernel requests for the op."""
    fn = getattr(op_module(op.kind), "tflm_scratch", None)
    return [] if fn is None else list(fn(graph, op))


def optimized_scratch(graph: BlockGraph, op: Op, model: Any) -> int:
    """Scratch an optimised kernel library requests for the op under ``model`` (a
    ``ScratchModel``: bytes per conv tap, per average-pool channel, ...)."""
    fn = getattr(op_module(op.kind), "optimized_scratch", None)
    return 0 if fn is None else int(fn(graph, op, model))


def params_types() -> list[type]:
    """Every Params dataclass with a C struct (``C_STRUCT``)."""
    out = []
    for m in MODULES:
        for v in vars(m).values():
            if isinstance(v, type) and v.__module__ == m.__name__ and getattr(v, "C_STRUCT", None):
                out.append(v)
    return out
