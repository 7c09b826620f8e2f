"""Per block and MCU profile: training SRAM, flash, largest batch, MACs and time per step,
and the same figures for backprop through the whole network.

Flash of training block i = the int8 .tflite files of the frozen blocks < i + the block's
initial weights: its trained parameters as float32 (4 B each, as in the float export),
plus its own int8 .tflite when some of its parameters stay frozen (they are read, int8,
from there). Time = the frozen prefix's int8 cycles (``cost.estimate_latency`` per
image) + float32 MACs x the profile's ``cost.fp32_mac_cycles``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ctxconv.blockgraph.geometry import BlockGeometry, trainable_names
from ctxconv.blockgraph.ir import BlockGraph
from ctxconv.memory.training import (
    MemoryLayout,
    backprop_layout,
    forward_only_layout,
)
from ctxconv.ondevice.optim import OPTIMIZERS
from ctxconv.ondevice.work import backprop_work, forward_only_work
from ctxconv.sim.cost import estimate_latency, op_work
from ctxconv.sim.fit import plan_on
from ctxconv.sim.profiles import McuProfile

MAX_BATCH = 1 << 16


def state_bytes_per_param(optimizer: str, momentum: float = 0.9) -> int:
    """Optimizer state per trained parameter: SGD momentum 1x float32, Adam 2x."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {OPTIMIZERS}")
    return 8 if optimizer == "adam" else (4 if momentum else 0)


def largest_batch(sram_at: Callable[[int], int], limit: int, cap: int = MAX_BATCH) -> int:
    """Largest B <= cap such that every batch 1..B fits: sram_at(b) <= limit (0: none).

    TFLM's greedy planner is not monotone in the batch size (size-ordered first-fit can
    pack a larger batch tighter: a few tens of bytes), so a boundary found by bisection
    is checked downwards; the answer grows monotonically with ``limit``.
    """
    if sram_at(1) > limit:
        return 0
    lo, hi = 1, 2
    while hi <= cap and sram_at(hi) <= limit:
        lo, hi = hi, hi * 2
    hi = min(hi, cap + 1)
    while hi - lo > 1:  # sram_at(lo) fits, sram_at(hi) does not (or hi = cap + 1)
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if sram_at(mid) <= limit else (lo, mid)
    return next((b - 1 for b in range(2, lo + 1) if sram_at(b) > limit), lo)


@dataclass
class ExportModel:
    """What the accounting needs from an int8 export: geometry, graphs, file sizes."""

    geoms: list[BlockGeometry]
    graphs: list[BlockGraph]
    tflite_bytes: list[int]
    tflite: list[bytes] | None = None

    @property
    def num_classes(self) -> int:
        return self.geoms[0].num_classes


def prefix_sram(model: ExportModel, index: int, profile: McuProfile) -> int:
    """SRAM of the frozen int8 blocks < index run per image: shared TFLM arena + staging."""
    if index == 0:
        return 0
    plan = plan_on(profile, model.graphs[:index], model.num_classes,
                   None if model.tflite is None else model.tflite[:index])
    return plan.arena_bytes + plan.staging_bytes


def prefix_cycles_per_image(model: ExportModel, index: int, profile: McuProfile
                            ) -> tuple[float, int]:
    """(cycles, int8 MACs) of the frozen blocks < index on one image."""
    cycles = sum(estimate_latency(g, profile).cycles for g in model.graphs[:index])
    macs = sum(op_work(g, op) for g in model.graphs[:index] for op in g.ops
               if op.kind in ("CONV_2D", "FULLY_CONNECTED"))
    return cycles, macs


def block_flash(model: ExportModel, index: int, update: str) -> int:
    g = model.geoms[index]
    names = trainable_names(g, update)
    own = model.tflite_bytes[index] if len(names) < len(g.param_shapes()) else 0
    return sum(model.tflite_bytes[:index]) + 4 * g.param_count(names) + own


def block_report(model: ExportModel, index: int, profile: McuProfile, batch: int,
                 optimizer: str = "sgd", objective: str = "softmax", update: str = "all"
                 ) -> dict[str, Any]:
    """Training block ``index`` forward-only on ``profile`` at ``batch``."""
    g = model.geoms[index]
    state = state_bytes_per_param(optimizer)
    prefix = prefix_sram(model, index, profile)

    def layout(b: int) -> MemoryLayout:
        return forward_only_layout(g, b, state, objective, update, prefix)

    plan = layout(batch)
    avail = profile.available_sram_bytes
    flash = block_flash(model, index, update)
    work = forward_only_work(g, batch, optimizer, objective, update)
    pc, pmacs = prefix_cycles_per_image(model, index, profile)
    cycles = batch * pc + work.total * profile.cost.fp32_mac_cycles
    fits_sram = plan.peak_bytes <= avail
    fits_flash = flash <= profile.available_flash_bytes
    return {
        "block": index, "mcu": profile.name, "batch": batch, "optimizer": optimizer,
        "objective": objective, "update": update,
        "trained_params": g.param_count(trainable_names(g, update)),
        "sram_bytes": plan.peak_bytes, "sram_sum_bytes": plan.sum_bytes,
        "available_sram_bytes": avail, "prefix_sram_bytes": prefix,
        "buffers": [{"name": b.name, "bytes": b.size, "offset": b.offset,
                     "live": [plan.steps[b.first], plan.steps[b.last]]} for b in plan.buffers],
        "flash_bytes": flash, "available_flash_bytes": profile.available_flash_bytes,
        "largest_batch": largest_batch(lambda b: layout(b).peak_bytes, avail),
        "fp32_macs": work.as_dict(), "prefix_int8_macs": batch * pmacs,
        "ms_per_step": 1e3 * profile.seconds(cycles),
        "fits_sram": fits_sram, "fits_flash": fits_flash, "fits": fits_sram and fits_flash,
    }  # fmt: skip


def backprop_report(model: ExportModel, profile: McuProfile, batch: int, optimizer: str = "sgd",
                    objective: str = "softmax") -> dict[str, Any]:
    """Backprop through the whole network, same model, batch and accounting."""
    state = state_bytes_per_param(optimizer)

    def layout(b: int) -> MemoryLayout:
        return backprop_layout(model.geoms, b, state, objective)

    plan = layout(batch)
    avail = profile.available_sram_bytes
    work = backprop_work(model.geoms, batch, optimizer, objective)
    n = sum(g.param_count() for g in model.geoms)
    biggest = sorted(plan.buffers, key=lambda b: -b.size)[:5]
    return {
        "mcu": profile.name, "batch": batch, "optimizer": optimizer, "trained_params": n,
        "sram_bytes": plan.peak_bytes, "sram_sum_bytes": plan.sum_bytes,
        "largest_buffers": [{"name": b.name, "bytes": b.size} for b in biggest],
        "flash_bytes": 4 * n,  # the float32 initial weights of every block
        "largest_batch": largest_batch(lambda b: layout(b).peak_bytes, avail),
        "fp32_macs": work.as_dict(),
        "ms_per_step": 1e3 * profile.seconds(work.total * profile.cost.fp32_mac_cycles),
        "fits_sram": plan.peak_bytes <= avail,
    }  # fmt: skip
