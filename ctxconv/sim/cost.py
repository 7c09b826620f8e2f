"""Latency and energy of a block on an MCU from its profile's cycle cost model.

Work per op is its module's ``ops.<op>.macs`` (MACs for conv and fully connected, input
taps for pooling, elements for the elementwise ops and reductions, nothing for a view),
charged at the profile's cost field the module names (``COST_FIELD``), plus the
profile's fixed per-op overhead. A first-order model: it ignores memory-bound
effects beyond what the per-MAC figures already average in.
"""

from __future__ import annotations

from dataclasses import dataclass

from ctxconv.blockgraph import ops
from ctxconv.blockgraph.ir import BlockGraph, Op
from ctxconv.sim.profiles import McuProfile


def op_work(graph: BlockGraph, op: Op) -> int:
    """MACs (conv/FC), window taps (pooling) or elements of one op (``ops.<op>.macs``)."""
    return ops.macs(graph, op)


@dataclass(frozen=True)
class LatencyEstimate:
    """Cycles per op (in graph order), totals, and energy when the profile has power."""

    profile: str
    op_cycles: list[tuple[str, int, float]]  # (kind, work, cycles)
    cycles: float
    seconds: float
    energy_mj: float | None


def estimate_latency(graph: BlockGraph, profile: McuProfile) -> LatencyEstimate:
    """First-order cycle count of one inference of ``graph`` on ``profile``."""
    c = profile.cost
    rows = []
    for op in graph.ops:
        work = op_work(graph, op)
        field = ops.op_module(op.kind).COST_FIELD
        per_unit = 0.0 if field is None else float(getattr(c, field))
        rows.append((op.kind, work, c.op_overhead_cycles + per_unit * work))
    total = sum(r[2] for r in rows)
    return LatencyEstimate(
        profile.name, rows, total, profile.seconds(total), profile.energy_mj(total)
    )
