"""TFLM's GreedyMemoryPlanner, reproduced offset for offset.

The arena head holds every non-constant tensor (and kernel scratch buffer) at an
offset chosen by TFLM's greedy-by-size first-fit planner. Reproducing its exact
order (stable bubble sort by size, descending, of the buffers in reverse order of
addition, so equal sizes are placed last-added first) and its
first-fit scan over the offset-sorted list of buffers that are live at the same time
gives the same offsets and the same peak as the device.
"""

from __future__ import annotations

from dataclasses import dataclass

ALIGNMENT = 16  # MicroArenaBufferAlignment()


def align_up(n: int, alignment: int = ALIGNMENT) -> int:
    return (n + alignment - 1) // alignment * alignment


@dataclass(frozen=True)
class Buffer:
    """One planned buffer: ``size`` bytes live from op ``first`` to op ``last`` inclusive."""

    size: int
    first: int
    last: int


def _overlap(a: Buffer, b: Buffer) -> bool:
    return not (a.first > b.last or b.first > a.last)


def greedy_offsets(buffers: list[Buffer], alignment: int = ALIGNMENT) -> tuple[list[int], int]:
    """Offsets (bytes, in input order) and peak size of a TFLM greedy plan.

    Sizes are aligned up to ``alignment`` first, as TFLM's CreatePlan does, so every
    offset is a multiple of it.
    """
    sizes = [align_up(b.size, alignment) for b in buffers]
    # CalculateOffsetsIfNeeded fills the online-planned buffers in from the tail of its
    # sort array (last added first), then ReverseSortInPlace (a stable bubble sort,
    # descending): equal sizes end up in reverse order of addition
    order = list(reversed(range(len(buffers))))
    order.sort(key=lambda i: -sizes[i])
    placed: list[int] = []  # buffer ids sorted by offset
    offsets = [0] * len(buffers)
    for i in order:
        want = Buffer(sizes[i], buffers[i].first, buffers[i].last)
        candidate = 0
        live = [j for j in placed if _overlap(want, buffers[j])]
        for j in live:  # offset order
            if offsets[j] - candidate >= want.size:
                break
            candidate = max(candidate, offsets[j] + sizes[j])
        offsets[i] = candidate
        # insert after every entry whose offset is <= candidate (TFLM's list insertion)
        pos = len(placed)
        for k, j in enumerate(placed):
            if offsets[j] > candidate:
                pos = k
                break
        placed.insert(pos, i)
    peak = max((offsets[i] + sizes[i] for i in range(len(buffers))), default=0)
    return offsets, peak
