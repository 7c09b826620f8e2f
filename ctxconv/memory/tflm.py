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

from ctxconv.blockgraph import ops
from ctxconv.blockgraph.ir import BlockGraph, Op
from ctxconv.memory.greedy import ALIGNMENT, Buffer, align_up, greedy_offsets
from ctxconv.memory.tflm_overhead import DEFAULT_OVERHEAD, TflmOverhead, reference_scratch


@dataclass(frozen=True)
class ScratchModel:
    """Arena scratch the kernel library requests (0 everywhere: TFLM reference kernels).

    conv scratch = conv_bytes_per_tap * kh * kw * Cin (none for 1x1 stride-1 convs)
                 + conv_input_copy * input bytes + conv_filter_copy * filter bytes;
    average-pool scratch = avgpool_bytes_per_channel * C.
    """

    conv_bytes_per_tap: float = 0.0
    conv_input_copy: float = 0.0
    conv_filter_copy: float = 0.0
    avgpool_bytes_per_channel: float = 0.0


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
        if op.kind in ("RESHAPE", "MEAN"):  # the writer adds an int32 shape / axes input
            shape = op.options["shape" if op.kind == "RESHAPE" else "axes"]
            suffix = "/shape" if op.kind == "RESHAPE" else "/axes"
            total += (
                4
                + 4 * len(shape)
                + _tensor_flash(op.outputs[0] + suffix, 1, None, 4 * len(shape))
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


def conv_scratch_bytes(graph: BlockGraph, op: Op, scratch: ScratchModel | None) -> int:
    """Scratch an optimised kernel library requests for ``op`` (None: reference, 0)."""
    if scratch is None:
        return 0
    return ops.optimized_scratch(graph, op, scratch) if op.kind in ops.REGISTRY else 0


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
    scratch: ScratchModel | None = None,
    overhead: TflmOverhead = DEFAULT_OVERHEAD,
) -> MemoryPlan:
    """Plan one block's arena and flash.

    ``scratch`` adds the buffers an optimised kernel library requests (CMSIS-NN im2col,
    ESP-NN copies); without it TFLM's reference kernels need none. ``overhead`` is TFLM's
    bookkeeping: the host-fitted 64-bit model unless a 32-bit one is given.
    """
    ops.validate_structure(graph)
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
    counts = []
    for i, op in enumerate(graph.ops, start=1):
        sizes = [conv_scratch_bytes(graph, op, scratch), *reference_scratch(graph, op)]
        sizes = [n for n in sizes if n]
        counts.append(len(sizes))
        for j, n in enumerate(sizes):
            name = f"{op.outputs[0]}/scratch" + (f"{j}" if j else "")
            entries.append(TensorPlan(name, (n,), "int8", n, "scratch", i, i))
            buffers.append(Buffer(n, i, i))
    offsets, head = greedy_offsets(buffers, ALIGNMENT)
    planned = [e for e in entries if e.kind != "constant"]
    for e, off in zip(planned, offsets, strict=True):
        e.offset = off
    arena, phases = overhead.arena(graph, head, len(buffers), counts)
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


# ---------------------------------------------------------------------- pipelines


@dataclass
class PipelinePlan:
    """Memory plan of blocks run one after another on one MCU.

    Block i's output feature map is block i+1's input. With a shared arena (TFLM
    multi-tenant: one allocator, tails stacked, heads overlaid) the feature map must
    survive in an application buffer while the next block's head is reused, so the
    largest boundary map is staged outside the arena; with one arena per block it stays
    in block i's arena. In multipass the blocks from the first contextual one on run once
    per candidate context, each pass starting from that block's input, which stays staged
    beside the loop's boundary maps (``staging_bytes``). The context vector (K int8) and
    the score accumulator (K int32) live for the whole pipeline.
    """

    blocks: list[MemoryPlan]
    context_size: int
    shared_arena: bool
    arena_bytes: int
    boundaries: list[tuple[str, str, tuple[int, ...], int]]  # (from, to, shape, bytes)
    staging_bytes: int
    flash_bytes: int
    graphs: list[BlockGraph] = field(default_factory=list, repr=False)
    tflite: list[bytes] | None = field(default=None, repr=False)

    @property
    def context_bytes(self) -> int:
        return self.context_size  # int8

    @property
    def score_bytes(self) -> int:
        return 4 * self.context_size  # int32 accumulators

    @property
    def sram_bytes(self) -> int:
        """Everything the model side needs: arena + staging + context + scores."""
        return self.arena_bytes + self.staging_bytes + self.context_bytes + self.score_bytes

    def describe(self) -> str:
        kind = "shared arena" if self.shared_arena else "one arena per block"
        lines = [
            f"pipeline of {len(self.blocks)} blocks ({kind}): SRAM {self.sram_bytes:,} B = "
            f"arena {self.arena_bytes:,} + staging {self.staging_bytes:,} + context "
            f"{self.context_bytes} + scores {self.score_bytes}; flash {self.flash_bytes:,} B",
        ]
        for b in self.blocks:
            lines.append(
                f"  block {b.name!r}: head {b.head_bytes:,} B, tail {b.tail_bytes:,} B, "
                f"alone {b.arena_bytes:,} B, flash {b.flash_bytes:,} B"
            )
        for src, dst, shape, n in self.boundaries:
            lines.append(f"  boundary {src!r} -> {dst!r}: {shape} int8, {n:,} B live across")
        return "\n".join(lines)


def _shared_arena(blocks: list[MemoryPlan]) -> int:
    """One allocator for all blocks: tails stack up in load order, heads overlay.

    While block j allocates, the tails of blocks < j are already there; afterwards all
    tails stay and the head must hold the largest block's plan.
    """
    peak, tails = 0, 0
    for b in blocks:
        peak = max(peak, tails + b.arena_bytes)
        tails += b.tail_bytes
    return align_up(max(peak, tails + max((b.head_bytes for b in blocks), default=0)))


def staging_bytes(graphs: list[BlockGraph], boundaries: list[int]) -> int:
    """Bytes staged outside a shared arena: one boundary feature map at a time, and in
    multipass, while the candidate loop runs the blocks after the first contextual block,
    that block's input as well (every candidate's pass starts again from it).

    ``boundaries[i]`` is the bytes of the map from block i to block i+1.
    """
    first = next((i for i, g in enumerate(graphs) if "context" in g.inputs), None)
    prefix = max(boundaries[:first] if first is not None else boundaries, default=0)
    if first is None or first == len(graphs) - 1:
        return prefix  # no loop over later blocks: the held input is the last boundary
    held = graphs[first].tensors[graphs[first].inputs[0]].nbytes
    return max(prefix, held + max(boundaries[first:], default=0))


def plan_pipeline(
    graphs: list[BlockGraph],
    context_size: int,
    tflite: list[bytes] | None = None,
    scratch: ScratchModel | None = None,
    shared_arena: bool = True,
    overhead: TflmOverhead = DEFAULT_OVERHEAD,
) -> PipelinePlan:
    """Plan blocks that run in sequence: graphs[i].outputs[0] feeds graphs[i+1].inputs[0].

    ``context_size`` is K (context vector int8[K], score accumulator int32[K]);
    ``tflite`` gives each block's file bytes for exact flash sizes; ``scratch`` and
    ``overhead`` are as in ``plan_block``.
    """
    if not graphs:
        raise ValueError("a pipeline needs at least one block")
    if tflite is not None and len(tflite) != len(graphs):
        raise ValueError(f"{len(tflite)} .tflite files for {len(graphs)} blocks")
    if context_size < 0:
        raise ValueError(f"context_size must be >= 0, got {context_size}")
    blocks = [
        plan_block(g, None if tflite is None else tflite[i], scratch, overhead)
        for i, g in enumerate(graphs)
    ]
    boundaries = []
    for a, b in zip(graphs, graphs[1:], strict=False):
        out, inp = a.tensors[a.outputs[0]], b.tensors[b.inputs[0]]
        if tuple(out.shape[1:]) != tuple(inp.shape[1:]) or out.dtype != inp.dtype:
            raise ValueError(
                f"block {a.name!r} output {out.name!r} {out.dtype}{out.shape} does not match "
                f"block {b.name!r} input {inp.name!r} {inp.dtype}{inp.shape}"
            )
        boundaries.append((a.name, b.name, tuple(out.shape), out.nbytes))
    if shared_arena:
        arena = _shared_arena(blocks)
        staging = staging_bytes(graphs, [n for *_, n in boundaries])
    else:
        arena = sum(b.arena_bytes for b in blocks)
        staging = 0
    flash = sum(align_up(b.flash_bytes, 16) for b in blocks)
    return PipelinePlan(
        blocks,
        int(context_size),
        shared_arena,
        arena,
        boundaries,
        staging,
        flash,
        list(graphs),
        None if tflite is None else list(tflite),
    )
