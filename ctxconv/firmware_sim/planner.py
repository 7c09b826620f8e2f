"""Flash and SRAM planning for one block graph and for a pipeline of blocks on an MCU.

SRAM (the TFLM tensor arena) has two parts, as in TFLM's MicroAllocator:

* head: every activation tensor (and kernel scratch buffer) placed by lifetime with
  TFLM's greedy planner (``greedy.py``), offsets aligned to 16;
* tail: the runtime's persistent bookkeeping, modelled by ``TflmOverhead``.

TFLM also needs temporary memory while it prepares the kernels and while it plans, so
the minimum arena is the largest of three phases (see ``TflmOverhead.arena``). The
constants were measured against the tflite-micro Python interpreter (64-bit host
build, recording allocator) by bisecting the smallest arena that works; on a 32-bit
MCU TFLM's structs are smaller (4-byte pointers), so the same prediction is an upper
bound there.

Flash is the .tflite file itself when its bytes are given, else an estimate from the
constant tensors, their quantization parameters and flatbuffer metadata per tensor/op.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ctxconv.export.ir import BlockGraph, Op
from ctxconv.firmware_sim.arena_model import DEFAULT_OVERHEAD, TflmOverhead
from ctxconv.firmware_sim.greedy import ALIGNMENT, Buffer, align_up, greedy_offsets
from ctxconv.firmware_sim.profiles import McuProfile


class DoesNotFitError(ValueError):
    """A model or pipeline needs more SRAM or flash than an MCU profile offers."""


# ------------------------------------------------------------------ flash estimate

#: Flatbuffer bytes besides tensor data, sized to stay above files from ``write_tflite``:
#: per file (header, model/subgraph tables, description), per tensor (table, offsets),
#: per quantized tensor (table + vector headers), per constant (buffer table + up to 16 B
#: of alignment padding), per op (table, options, opcode entry).
FLASH_PER_FILE = 240
FLASH_PER_TENSOR = 40
FLASH_PER_QUANT = 32
FLASH_PER_CONSTANT = 32
FLASH_PER_OP = 56
FLASH_BUFFER_ALIGN = 16


def _tensor_flash(name: str, rank: int, n_scales: int | None, data_bytes: int | None) -> int:
    n = FLASH_PER_TENSOR + align_up(len(name) + 1, 4) + 4 * rank
    if n_scales is not None:  # float32 scales + int64 zero points
        n += FLASH_PER_QUANT + 12 * n_scales
    if data_bytes is not None:
        n += FLASH_PER_CONSTANT + align_up(data_bytes, FLASH_BUFFER_ALIGN)
    return n


def estimate_flash(graph: BlockGraph) -> int:
    """Estimated .tflite size (bytes) when the file itself is not at hand."""
    total = FLASH_PER_FILE + len(graph.name)
    for t in graph.tensors.values():
        total += _tensor_flash(
            t.name,
            len(t.shape),
            None if t.quant is None else int(t.quant.scale.size),
            t.nbytes if t.is_constant else None,
        )
    for op in graph.ops:
        total += FLASH_PER_OP + 4 * (len(op.inputs) + len(op.outputs))
        if op.kind == "RESHAPE":  # the writer adds an int32 shape constant input
            shape = op.options["shape"]
            total += (
                4
                + 4 * len(shape)
                + _tensor_flash(op.outputs[0] + "/shape", 1, None, 4 * len(shape))
            )
    return total


# ------------------------------------------------------------------- block plans


@dataclass
class TensorPlan:
    """Where one tensor lives: an arena offset (activations, scratch) or flash."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    nbytes: int
    kind: str  # "activation" | "scratch" | "constant"
    first_op: int | None = None  # lifetime in op steps (0 = before the first op)
    last_op: int | None = None
    offset: int | None = None  # arena byte offset (head); None for constants


@dataclass
class MemoryPlan:
    """Memory plan of one block graph."""

    name: str
    tensors: list[TensorPlan]
    head_bytes: int  # planned activations + scratch (greedy peak)
    tail_bytes: int  # TFLM persistent overhead
    arena_bytes: int  # minimum tensor arena (max over TFLM's phases, 16-aligned)
    flash_bytes: int  # .tflite size (exact when bytes were given, else estimated)
    flash_exact: bool
    phases: dict[str, int] = field(default_factory=dict)

    @property
    def constant_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors if t.kind == "constant")

    def largest(self, n: int = 5) -> list[TensorPlan]:
        """The ``n`` largest arena tensors."""
        live = [t for t in self.tensors if t.kind != "constant"]
        return sorted(live, key=lambda t: -t.nbytes)[:n]

    def describe(self) -> str:
        """A per-tensor table plus the arena and flash totals."""
        lines = [
            f"block {self.name!r}: arena {self.arena_bytes} B "
            f"(head {self.head_bytes} B activations/scratch + tail {self.tail_bytes} B "
            f"TFLM overhead), flash {self.flash_bytes} B"
            + ("" if self.flash_exact else " (estimated)"),
            f"  {'tensor':<24} {'kind':<10} {'shape':<18} {'dtype':<7} {'bytes':>8} "
            f"{'offset':>8} {'live ops':>9}",
        ]
        for t in self.tensors:
            live = "" if t.first_op is None else f"{t.first_op}-{t.last_op}"
            off = "flash" if t.offset is None else str(t.offset)
            lines.append(
                f"  {t.name[:24]:<24} {t.kind:<10} {str(tuple(t.shape)):<18} {t.dtype:<7} "
                f"{t.nbytes:>8} {off:>8} {live:>9}"
            )
        if self.phases:
            lines.append(
                "  TFLM phases: " + ", ".join(f"{k} {v} B" for k, v in self.phases.items())
            )
        return "\n".join(lines)


def conv_scratch_bytes(graph: BlockGraph, op: Op, profile: McuProfile | None) -> int:
    """Scratch a profile's optimised kernel library requests for ``op`` (0: reference)."""
    if profile is None:
        return 0
    s = profile.scratch
    x = graph.tensors[op.inputs[0]]
    if op.kind == "CONV_2D":
        w = graph.tensors[op.inputs[1]]
        cout, kh, kw, cin = w.shape
        one_by_one = (kh, kw) == (1, 1) and tuple(op.options["stride"]) == (1, 1)
        taps = 0 if one_by_one else s.conv_bytes_per_tap * kh * kw * cin
        return int(taps + s.conv_input_copy * x.nbytes + s.conv_filter_copy * w.nbytes)
    if op.kind == "AVERAGE_POOL_2D":
        return int(s.avgpool_bytes_per_channel * x.shape[-1])
    return 0


def _lifetimes(graph: BlockGraph) -> dict[str, tuple[int, int]]:
    """TFLM AllocationInfoBuilder lifetimes: graph inputs live from step 0, op i runs at
    step i + 1, graph outputs live to the last step; intervals are inclusive."""
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for name in graph.inputs:
        first.setdefault(name, 0)
        last[name] = 0
    for i, op in enumerate(graph.ops, start=1):
        for name in op.outputs:
            first.setdefault(name, i)
            last[name] = max(last.get(name, i), i)
        for name in op.inputs:
            if not graph.tensors[name].is_constant:
                last[name] = max(last.get(name, i), i)
    end = len(graph.ops)
    for name in graph.outputs:
        first.setdefault(name, end)
        last[name] = end
    return {n: (first[n], last[n]) for n in first}


def plan_block(
    graph: BlockGraph,
    tflite_bytes: bytes | None = None,
    profile: McuProfile | None = None,
    overhead: TflmOverhead = DEFAULT_OVERHEAD,
) -> MemoryPlan:
    """Plan one block's arena and flash.

    ``profile`` adds the scratch buffers its kernel library requests (CMSIS-NN im2col,
    ESP-NN copies); without one, TFLM's reference kernels need none.
    """
    graph.validate()
    life = _lifetimes(graph)
    entries: list[TensorPlan] = []
    buffers: list[Buffer] = []
    for t in graph.tensors.values():
        if t.is_constant:
            entries.append(TensorPlan(t.name, tuple(t.shape), t.dtype, t.nbytes, "constant"))
            continue
        if t.name not in life:
            continue  # never read or written: TFLM leaves it unplanned
        f, la = life[t.name]
        entries.append(TensorPlan(t.name, tuple(t.shape), t.dtype, t.nbytes, "activation", f, la))
        buffers.append(Buffer(t.nbytes, f, la))
    for i, op in enumerate(graph.ops, start=1):
        scratch = conv_scratch_bytes(graph, op, profile)
        if scratch:
            name = f"{op.outputs[0]}/scratch"
            entries.append(TensorPlan(name, (scratch,), "int8", scratch, "scratch", i, i))
            buffers.append(Buffer(scratch, i, i))
    offsets, head = greedy_offsets(buffers, ALIGNMENT)
    planned = [e for e in entries if e.kind != "constant"]
    for e, off in zip(planned, offsets, strict=True):
        e.offset = off
    n_scratch = sum(e.kind == "scratch" for e in entries)
    arena, phases = overhead.arena(graph, head, len(buffers), n_scratch)
    flash = len(tflite_bytes) if tflite_bytes is not None else estimate_flash(graph)
    return MemoryPlan(
        name=graph.name,
        tensors=entries,
        head_bytes=head,
        tail_bytes=phases.pop("tail"),
        arena_bytes=arena,
        flash_bytes=flash,
        flash_exact=tflite_bytes is not None,
        phases=phases,
    )
