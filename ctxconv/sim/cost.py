"""Latency and energy of a block on an MCU from its profile's cycle cost model.

Work per op: MACs for CONV_2D (Ho*Wo*Cout*kh*kw*Cin) and FULLY_CONNECTED (Din*Dout),
input taps for pooling (Ho*Wo*C*fh*fw), output elements for ADD and MUL, input elements
for MEAN, twice the input elements for L2_NORMALIZATION (squares, then rescale; all
charged at the per-element ADD cost), nothing for RESHAPE;
plus the profile's fixed per-op overhead. A first-order model: it ignores memory-bound
effects beyond what the per-MAC figures already average in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ctxconv.blockgraph.ir import BlockGraph, Op
from ctxconv.sim.profiles import McuProfile


def op_work(graph: BlockGraph, op: Op) -> int:
    """MACs (conv/FC), window taps (pooling) or elements (ADD) of one op."""
    out = graph.tensors[op.outputs[0]]
    n_out = int(np.prod(out.shape, dtype=np.int64))
    if op.kind == "CONV_2D":
        _, kh, kw, cin = graph.tensors[op.inputs[1]].shape
        return n_out * kh * kw * cin
    if op.kind == "FULLY_CONNECTED":
        return int(np.prod(graph.tensors[op.inputs[1]].shape, dtype=np.int64))
    if op.kind in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
        fh, fw = op.options["filter"]
        return n_out * int(fh) * int(fw)
    if op.kind in ("ADD", "MUL"):
        return n_out
    n_in = int(np.prod(graph.tensors[op.inputs[0]].shape, dtype=np.int64))
    if op.kind == "MEAN":
        return n_in
    if op.kind == "L2_NORMALIZATION":
        return 2 * n_in
    return 0


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
    per_unit = {
        "CONV_2D": c.conv_cycles_per_mac,
        "FULLY_CONNECTED": c.fc_cycles_per_mac,
        "MAX_POOL_2D": c.pool_cycles_per_element,
        "AVERAGE_POOL_2D": c.pool_cycles_per_element,
        "ADD": c.add_cycles_per_element,
        "MUL": c.add_cycles_per_element,
        "MEAN": c.add_cycles_per_element,
        "L2_NORMALIZATION": c.add_cycles_per_element,
        "RESHAPE": 0.0,
    }
    rows = []
    for op in graph.ops:
        work = op_work(graph, op)
        rows.append((op.kind, work, c.op_overhead_cycles + per_unit[op.kind] * work))
    total = sum(r[2] for r in rows)
    return LatencyEstimate(
        profile.name, rows, total, profile.seconds(total), profile.energy_mj(total)
    )
