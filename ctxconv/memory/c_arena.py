"""One static tensor arena for the whole block pipeline, laid out at generation time.

The generated library runs the blocks one after another on a single byte array. This
module turns the blocks' graphs into a schedule of kernel calls and gives every buffer an
offset in that array:

- RESHAPE is a view (no buffer); block i's ``features_in`` is block i-1's ``features``
  (block 0's is the input slot, where the caller's image is quantized).
- An op runs in place when its ``ops.<op>.in_place`` rule allows it (pools with VALID
  padding, elementwise ops into their first operand, ...; see ``ctxconv_kernels.h``) and
  nothing reads its input afterwards.
- Multipass runs the first contextual block's context-free ops (e.g. the conv of the image,
  the im2col formulation's shared part) once, then loops over the candidate contexts: that
  block's ops that read the context and every later block (its input depends on the
  context). What the loop reads from before it stays live to the end of the pipeline.
- ``ctxconv_run_block`` may run a contextual block again (once per candidate), so what
  such a block reads from before it stays live to its end.
- An op whose C kernel needs scratch (``ops.<op>.c_scratch_bytes``: the conv's im2col
  columns) gets it live during that op only.

Buffers are then placed greedy by size, lowest offset first (as TFLM's planner), 4-byte
aligned, with one difference: a buffer an in-place op shrank (a pool writes its smaller
output over the head of its input) frees its tail for the steps after that op.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ctxconv.blockgraph import ops
from ctxconv.blockgraph.ir import BlockGraph, Op, context_dependent_ops, head_only_ops
from ctxconv.memory.greedy import align_up

ALIGNMENT = 4
INPUT = "input"
CONTEXT = "context"  # a contextual block's context input: the caller's array, not the arena


@dataclass
class Step:
    """One kernel call of the schedule."""

    block: int
    op: Op
    inputs: list[str | None]  # per op input: global name, CONTEXT, or None for a constant
    output: str
    per_context: bool = False  # runs once per candidate context (reads the context)
    head_only: bool = False  # only the head's scores need it: skipped when they weigh 0
    scratch: str | None = None


@dataclass
class ArenaLayout:
    """Offsets of every arena tensor (views resolved) and the arena size in bytes."""

    steps: list[Step]
    offsets: dict[str, int]  # global tensor name -> byte offset
    sizes: dict[str, int]  # root buffer -> bytes
    size: int
    in_place: list[str] = field(default_factory=list)  # outputs that overwrite their input

    def offset(self, name: str) -> int:
        return self.offsets[name]

    def table(self) -> list[dict[str, int | str]]:
        """Every buffer with its offset and size, by offset (for manifests and errors)."""
        rows = [{"buffer": r, "offset": self.offsets[r], "bytes": n}
                for r, n in self.sizes.items()]
        return sorted(rows, key=lambda r: (r["offset"], r["buffer"]))


def global_name(block: int, tensor: str) -> str:
    return f"b{block}.{tensor}"


def _shared_first(graph: BlockGraph) -> list[tuple[int, Op]]:
    """The block's ops with those that do not depend on the context first (they run once per
    image, the rest once per candidate context); each part keeps its order."""
    ops = list(zip(enumerate(graph.ops), context_dependent_ops(graph), strict=True))
    return [jo for jo, dep in ops if not dep] + [jo for jo, dep in ops if dep]


def _schedule(graphs: list[BlockGraph]) -> tuple[list[Step], dict[str, str], dict[str, int]]:
    """Steps, the view aliases (name -> the name whose bytes it uses), buffer sizes."""
    steps: list[Step] = []
    alias: dict[str, str] = {}
    sizes: dict[str, int] = {}
    for b, g in enumerate(graphs):
        prev = INPUT if b == 0 else global_name(b - 1, "features")
        alias[global_name(b, "features_in")] = prev
        if b == 0:
            sizes[INPUT] = g.tensors["features_in"].nbytes
        for name, t in g.tensors.items():
            if not t.is_constant and name not in ("features_in", CONTEXT):
                sizes[global_name(b, name)] = t.nbytes
        per_context, head_only = context_dependent_ops(g), head_only_ops(g)
        for j, op in _shared_first(g):
            ins = [None if g.tensors[n].is_constant else
                   CONTEXT if n == CONTEXT else global_name(b, n) for n in op.inputs]
            out = global_name(b, op.outputs[0])
            step = Step(b, op, ins, out, per_context=per_context[j], head_only=head_only[j])
            if _is_view(op):
                alias[out] = ins[0]
            scratch = ops.c_scratch_bytes(g, op) if op.kind in ops.REGISTRY else 0
            if scratch:
                step.scratch = global_name(b, f"op{j}.scratch")
                sizes[step.scratch] = scratch
            steps.append(step)
    return steps, alias, sizes


def _arena_inputs(step: Step) -> list[str]:
    return [n for n in step.inputs if n is not None and n != CONTEXT]


def _follow(maps: tuple[dict[str, str], ...], name: str) -> str:
    """Follow ``name`` through the alias maps until it names its own bytes."""
    while True:
        for m in maps:
            if name in m:
                name = m[name]
                break
        else:
            return name


def _is_view(op: Op) -> bool:
    """An op the library does not run: its output aliases its input's bytes."""
    return getattr(ops.REGISTRY.get(op.kind), "IS_VIEW", False)


def _in_place_ok(op: Op, graph: BlockGraph) -> bool:
    return op.kind in ops.REGISTRY and ops.in_place(graph, op)


def _place(profiles: dict[str, dict[int, int]]) -> tuple[dict[str, int], int]:
    """Greedy by peak size, lowest offset first, for buffers whose size changes per step.

    ``profiles[r][t]`` is the bytes buffer ``r`` occupies (from its offset) at step t; two
    buffers may share addresses at steps where their occupied ranges do not meet. A buffer
    that an in-place op shrank frees its tail for the steps after that op.
    """
    order = sorted(profiles, key=lambda r: (-max(profiles[r].values()), r))
    offsets: dict[str, int] = {}
    for r in order:
        prof = profiles[r]
        shared = [(q, t) for q in offsets for t in prof if t in profiles[q]]
        candidates = sorted({0} | {align_up(offsets[q] + profiles[q][t], ALIGNMENT)
                                   for q, t in shared})
        offsets[r] = next(off for off in candidates if all(
            off >= offsets[q] + profiles[q][t] or offsets[q] >= off + prof[t]
            for q, t in shared))
    size = max((offsets[r] + max(p.values()) for r, p in profiles.items()), default=0)
    return offsets, align_up(size, ALIGNMENT)


def plan_arena(graphs: list[BlockGraph]) -> ArenaLayout:
    """Lay out every activation of the pipeline in one arena (see the module docstring)."""
    steps, views, sizes = _schedule(graphs)
    in_place_of: dict[str, str] = {}  # in-place output -> the input whose bytes it reuses

    def holder(name: str) -> str:  # the tensor whose bytes a view shows
        return _follow((views,), name)

    def root(name: str) -> str:  # the buffer: views and in-place chains resolved
        return _follow((views, in_place_of), name)

    block_end = {s.block: i for i, s in enumerate(steps)}
    block_start: dict[int, int] = {}
    contextual = {b for b, g in enumerate(graphs) if CONTEXT in g.inputs}
    for i, s in enumerate(steps):
        block_start.setdefault(s.block, i)
    # multipass's candidate loop: the first per-context step to the last step
    loop_start = next((i for i, s in enumerate(steps) if s.per_context), len(steps))

    written = {INPUT: -1} | {s.output: i for i, s in enumerate(steps) if not _is_view(s.op)}

    def hold_end(i: int, step: Step, h: str) -> int | None:
        """The step to which ``h``, read by step ``i``, must outlive its read (None: no
        hold): the candidate loop re-reads what was written before it, and a contextual
        block run again per candidate (``ctxconv_run_block``) re-reads its inputs."""
        if i >= loop_start > written[h]:
            return len(steps) - 1
        if step.block in contextual and written[h] < block_start[step.block]:
            return block_end[step.block]
        return None

    for i, s in enumerate(steps):
        if _is_view(s.op) or not _in_place_ok(s.op, graphs[s.block]):
            continue
        src = root(s.inputs[0])
        read_later = any(root(n) == src for t in steps[i + 1:] for n in _arena_inputs(t))
        outputs = {root(global_name(s.block, n)) for n in graphs[s.block].outputs}
        if not (read_later or hold_end(i, s, holder(s.inputs[0])) is not None
                or src in outputs):
            in_place_of[s.output] = s.inputs[0]

    # each tensor that owns bytes is live from its write to its last read
    live: dict[str, list[int]] = {h: [w, w] for h, w in written.items()}
    for i, s in enumerate(steps):
        for n in _arena_inputs(s):
            h = holder(n)
            end = hold_end(i, s, h)  # re-read by every candidate pass
            live[h][1] = max(live[h][1], i if end is None else end)
        if s.scratch:
            live[s.scratch] = [i, i]
    for b, g in enumerate(graphs):  # a block's outputs are read after its last op
        for n in g.outputs:
            h = holder(global_name(b, n))
            live[h][1] = max(live[h][1], block_end[b])
    profiles: dict[str, dict[int, int]] = {}
    for h, (first, last) in live.items():
        prof = profiles.setdefault(root(h), {})
        for t in range(first, last + 1):
            prof[t] = max(prof.get(t, 0), sizes[h])
    root_offset, size = _place(profiles)
    names = set(sizes) | set(views) | set(in_place_of)
    offsets = {n: root_offset[root(n)] for n in names if root(n) in root_offset}
    peaks = {r: max(p.values()) for r, p in profiles.items()}
    return ArenaLayout(steps, offsets, peaks, size, list(in_place_of))
