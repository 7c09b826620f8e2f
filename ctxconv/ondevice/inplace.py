"""Accounting of whole-block training with int8 weights updated in place (``qas.py``).

Buffers of one step (the static buffers of ``c/ctxconv_train.c``, same names), placed
by the greedy planner over the steps ``INPLACE_STEPS``:

* the block's int8 weights, where they change: ``store="ram"`` copies them from flash into
  SRAM once and updates them there; ``store="flash"`` leaves them in flash (the forward
  reads them memory-mapped) and writes every updated page back through one page buffer in
  SRAM (read page, update the channels in it, erase, program) -- flash wear and erase time
  are then part of the step (``FLASH_PAGES``);
* per-channel / per-class float32 scales and biases, the int8 batch of block inputs (the
  gradient re-reads it), ReLU masks as bits, the pooled grid z and the score gradients of
  the batch, and the gradient of ONE output channel (k*k*Cin floats) with that channel's
  grid gradients -- no full gradient buffer, no optimizer state (plain SGD).

Time: int8 conv MACs at the profile's int8 cost, float MACs (head, gradients) at its
float32 cost, plus the flash erase/program time when the weights stay in flash.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ctxconv.blockgraph.geometry import BlockGeometry
from ctxconv.memory.training import MemoryLayout, NamedBuffer, place
from ctxconv.ondevice.accounting import (
    ExportModel,
    largest_batch,
    prefix_cycles_per_image,
    prefix_sram,
)
from ctxconv.sim.profiles import McuProfile

F32 = 4
INPLACE_STEPS = ("inputs", "forward", "loss", "channel_updates", "head_updates")
_IN, _FWD, _LOSS, _CH, _HEAD = range(len(INPLACE_STEPS))
STORES = ("ram", "flash", "auto")


@dataclass(frozen=True)
class FlashPages:
    """Internal flash as the training step rewrites it."""

    page_bytes: int
    erase_ms: float  # per page
    program_us_per_word: float  # per 32-bit word
    endurance_cycles: int
    source: str


#: Only profiles whose flash controller figures are documented here can keep the weights in
#: flash while training; the others train with the weights in SRAM.
FLASH_PAGES: dict[str, FlashPages] = {
    "nrf52840": FlashPages(4096, 85.0, 41.0, 10_000,
                           "nRF52840 Product Specification v1.7, NVMC: 4 kB pages, "
                           "t_ERASEPAGE 85 ms and t_WRITE 41 us per word (maximum), "
                           "endurance 10 000 write/erase cycles"),
}


def check_geometry(geom: BlockGeometry) -> None:
    if geom.contextual:
        raise ValueError("int8 in-place training supports context-free blocks only "
                         "(the context enters through the goodness head)")


def int8_weight_bytes(geom: BlockGeometry) -> int:
    return geom.filters * geom.taps + geom.num_classes * geom.n_flat


def float_state_bytes(geom: BlockGeometry) -> int:
    """Scales and biases: per output channel and per class, float32."""
    return F32 * 2 * (geom.filters + geom.num_classes)


def weight_pages(geom: BlockGeometry, pages: FlashPages) -> int:
    """Flash pages holding the conv and head weights (each array page-aligned)."""
    p = pages.page_bytes
    return -(-geom.filters * geom.taps // p) + -(-geom.num_classes * geom.n_flat // p)


def inplace_buffers(geom: BlockGeometry, batch: int, store: str, prefix_bytes: int = 0,
                    page_bytes: int = 0) -> list[NamedBuffer]:
    """The buffers of one in-place step (``store`` "ram" or "flash")."""
    check_geometry(geom)
    k, o = geom.num_classes, geom.filters
    bufs = [
        NamedBuffer("frozen prefix (int8 arena)", prefix_bytes, _IN, _IN),
        NamedBuffer("scales + biases (fp32)", float_state_bytes(geom), _IN, _HEAD),
        NamedBuffer("labels", batch, _IN, _LOSS),
        NamedBuffer("block inputs (int8 batch)",
                    batch * geom.in_size * geom.in_size * geom.in_channels, _IN, _CH),
        NamedBuffer("ReLU masks (bits, batch)", -(-batch * geom.pixels * o // 8), _FWD, _CH),
        NamedBuffer("pooled grid z (fp32 batch)", F32 * batch * geom.n_flat, _FWD, _HEAD),
        NamedBuffer("scores -> dL/dscores (fp32)", F32 * batch * k, _LOSS, _HEAD),
        NamedBuffer("channel gradient (fp32, one channel)", F32 * geom.taps, _CH, _CH),
        NamedBuffer("channel grid gradient (fp32)",
                    F32 * batch * geom.head_grid * geom.head_grid, _CH, _CH),
    ]
    if store == "ram":
        bufs.insert(1, NamedBuffer("int8 weights (trained, in SRAM)", int8_weight_bytes(geom),
                                   _IN, _HEAD))
    elif store == "flash":
        bufs.append(NamedBuffer("flash page buffer", page_bytes, _CH, _HEAD))
    else:
        raise ValueError(f"unknown weight store {store!r}; choose ram or flash")
    return [b for b in bufs if b.size > 0]


def inplace_layout(geom: BlockGeometry, batch: int, store: str, prefix_bytes: int = 0,
                   page_bytes: int = 0) -> MemoryLayout:
    return place(inplace_buffers(geom, batch, store, prefix_bytes, page_bytes), INPLACE_STEPS)


@dataclass(frozen=True)
class InplaceWork:
    """MACs of one step (whole batch): int8 conv forward, float32 everything else."""

    int8_macs: int
    fp32_macs: int
    update_ops: int  # per int8 weight: scale, subtract, round, clamp (~4 ops each)

    def as_dict(self) -> dict[str, int]:
        return {"int8_macs": self.int8_macs, "fp32_macs": self.fp32_macs,
                "update_ops": self.update_ops}


def inplace_work(geom: BlockGeometry, batch: int) -> InplaceWork:
    conv = geom.pixels * geom.filters * geom.taps
    head = geom.n_flat * geom.num_classes
    # forward head; backward: dz, conv gradient, head gradient computed twice (max, round)
    fp32 = batch * (head + head + conv + 2 * head)
    return InplaceWork(batch * conv, fp32, 4 * int8_weight_bytes(geom))


def inplace_report(model: ExportModel, index: int, profile: McuProfile, batch: int,
                   store: str = "auto") -> dict[str, Any]:
    """Training all weights of block ``index`` in place on ``profile`` at ``batch``."""
    if store not in STORES:
        raise ValueError(f"unknown weight store {store!r}; choose one of {STORES}")
    g = model.geoms[index]
    check_geometry(g)
    prefix = prefix_sram(model, index, profile)
    pages = FLASH_PAGES.get(profile.name)
    avail = profile.available_sram_bytes

    def layout(b: int, s: str) -> MemoryLayout:
        return inplace_layout(g, b, s, prefix, pages.page_bytes if pages else 0)

    if store == "auto":
        store = "ram" if layout(batch, "ram").peak_bytes <= avail or pages is None else "flash"
    if store == "flash" and pages is None:
        raise ValueError(f"{profile.name}: no flash page figures known "
                         f"(known: {', '.join(FLASH_PAGES)}); train with --weight-store ram")
    plan = layout(batch, store)
    work = inplace_work(g, batch)
    pc, pmacs = prefix_cycles_per_image(model, index, profile)
    # the block's conv runs on the int8 kernel library's cost; the rest is float32
    conv_cpm = profile.cost.conv_cycles_per_mac
    cycles = (batch * pc + work.int8_macs * conv_cpm
              + (work.fp32_macs + work.update_ops) * profile.cost.fp32_mac_cycles)
    seconds = profile.seconds(cycles)
    flash_write_ms, n_pages = 0.0, 0
    if store == "flash":
        n_pages = weight_pages(g, pages)
        flash_write_ms = n_pages * (pages.erase_ms + pages.page_bytes / 4
                                    * pages.program_us_per_word / 1e3)
    weights = int8_weight_bytes(g)
    flash = sum(model.tflite_bytes[:index]) + weights + float_state_bytes(g)
    if store == "flash":
        flash = (sum(model.tflite_bytes[:index]) + n_pages * pages.page_bytes
                 + float_state_bytes(g))
    fits_sram = plan.peak_bytes <= avail
    fits_flash = flash <= profile.available_flash_bytes
    return {
        "block": index, "mcu": profile.name, "batch": batch, "weights": "int8-inplace",
        "store": store, "trained_params": g.param_count(), "trained_fraction": 1.0,
        "int8_weight_bytes": weights, "sram_bytes": plan.peak_bytes,
        "sram_sum_bytes": plan.sum_bytes, "available_sram_bytes": avail,
        "prefix_sram_bytes": prefix,
        "buffers": [{"name": b.name, "bytes": b.size, "offset": b.offset,
                     "live": [plan.steps[b.first], plan.steps[b.last]]} for b in plan.buffers],
        "flash_bytes": flash, "available_flash_bytes": profile.available_flash_bytes,
        "flash_pages_written_per_step": n_pages,
        "flash_write_ms_per_step": flash_write_ms,
        "max_steps_by_endurance": pages.endurance_cycles if store == "flash" else None,
        "largest_batch": largest_batch(lambda b: layout(b, store).peak_bytes, avail),
        "macs": work.as_dict(), "prefix_int8_macs": batch * pmacs,
        "ms_per_step": 1e3 * seconds + flash_write_ms,
        "fits_sram": fits_sram, "fits_flash": fits_flash, "fits": fits_sram and fits_flash,
    }  # fmt: skip
