"""One static tensor arena for the whole block pipeline, laid out at generation time.

The generated library runs the blocks one after another on a single byte array. This
module turns the blocks' graphs into a schedule of kernel calls and gives every buffer an
offset in that array:

- RESHAPE is a view (no buffer); block i's ``features_in`` is block i-1's ``features``
  (block 0's is the input slot, where the caller's image is quantized).
- Pools with VALID padding run in place (each output pixel is written no earlier than the
  first input byte it reads, see ``ctxconv_kernels.h``), and so does an elementwise ADD
  into its first operand, when nothing reads the input afterwards.
- A contextual block runs once per candidate context in multipass, so the buffers it
  reads from earlier blocks stay live until its last op.
- Each conv gets an im2col scratch (two int16 columns) live during that op only.

Buffers are then placed by the greedy-by-size first-fit planner (TFLM's), 4-byte aligned.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ctxconv.blockgraph.greedy import Buffer, greedy_offsets
from ctxconv.blockgraph.ir import BlockGraph, Op

ALIGNMENT = 4
INPUT = "input"
CONTEXT = "context"  # a contextual block's context input: the caller's array, not the arena


def conv_k_padded(op: Op, graph: BlockGraph) -> int:
    """k_h * k_w * in_c of a conv's weight, rounded up to a multiple of 4."""
    _, kh, kw, cin = graph.tensors[op.inputs[1]].shape
    return (kh * kw * cin + 3) // 4 * 4


@dataclass
class Step:
    """One kernel call of the schedule."""

    block: int
    op: Op
    inputs: list[str | None]  # per op input: global name, CONTEXT, or None for a constant
    output: str
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
        for j, op in enumerate(g.ops):
            ins = [None if g.tensors[n].is_constant else
                   CONTEXT if n == CONTEXT else global_name(b, n) for n in op.inputs]
            out = global_name(b, op.outputs[0])
            step = Step(b, op, ins, out)
            if op.kind == "RESHAPE":
                alias[out] = ins[0]
            if op.kind == "CONV_2D":
                step.scratch = global_name(b, f"op{j}.im2col")
                sizes[step.scratch] = 2 * 2 * conv_k_padded(op, g)  # two int16 columns
            steps.append(step)
    return steps, alias, sizes


def _arena_inputs(step: Step) -> list[str]:
    return [n for n in step.inputs if n is not None and n != CONTEXT]


def _root(alias: dict[str, str], name: str) -> str:
    while name in alias:
        name = alias[name]
    return name


def _in_place_ok(op: Op, graph: BlockGraph) -> bool:
    if op.kind in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
        return op.options["padding"] == "VALID"
    if op.kind == "ADD":
        a, out = graph.tensors[op.inputs[0]], graph.tensors[op.outputs[0]]
        return a.nbytes == out.nbytes and not a.is_constant
    return False


def plan_arena(graphs: list[BlockGraph], contextual: list[bool]) -> ArenaLayout:
    """Lay out every activation of the pipeline in one arena (see the module docstring)."""
    steps, alias, sizes = _schedule(graphs)
    block_end = {s.block: i for i, s in enumerate(steps)}
    block_start = {}
    for i, s in enumerate(steps):
        block_start.setdefault(s.block, i)

    def reads_of(root: str, after: int) -> list[int]:
        out = []
        for i, s in enumerate(steps):
            if i > after and any(_root(alias, n) == root for n in _arena_inputs(s)):
                out.append(i)
        return out

    in_place: list[str] = []
    for i, s in enumerate(steps):
        if s.op.kind == "RESHAPE" or not _in_place_ok(s.op, graphs[s.block]):
            continue
        src = _root(alias, s.inputs[0])
        held = contextual[s.block] and block_start[s.block] > _first_write(steps, alias, src)
        outputs = {_root(alias, global_name(s.block, n)) for n in graphs[s.block].outputs}
        if not held and not reads_of(src, i) and src not in outputs:
            alias[s.output] = src
            in_place.append(s.output)

    first: dict[str, int] = {INPUT: -1}
    last: dict[str, int] = {}
    for i, s in enumerate(steps):
        for n in _arena_inputs(s):
            r = _root(alias, n)
            last[r] = max(last.get(r, i), i)
            if contextual[s.block] and first.get(r, i) < block_start[s.block]:
                last[r] = max(last[r], block_end[s.block])  # re-read by every candidate pass
        r = _root(alias, s.output)
        first.setdefault(r, i)
        last[r] = max(last.get(r, i), i)
        if s.scratch:
            first[s.scratch] = last[s.scratch] = i
    for b, g in enumerate(graphs):  # a block's outputs are read after its last op
        for n in g.outputs:
            r = _root(alias, global_name(b, n))
            last[r] = max(last.get(r, block_end[b]), block_end[b])
    roots = sorted(first, key=lambda r: (first[r], r))
    placed, size = greedy_offsets(
        [Buffer(sizes[r], first[r] + 1, last[r] + 1) for r in roots], ALIGNMENT
    )
    root_offset = dict(zip(roots, placed, strict=True))
    names = set(sizes) | set(alias)
    offsets = {n: root_offset[_root(alias, n)] for n in names if _root(alias, n) in root_offset}
    return ArenaLayout(steps, offsets, {r: sizes[r] for r in roots}, size, in_place)


def _first_write(steps: list[Step], alias: dict[str, str], root: str) -> int:
    if root == INPUT:
        return -1
    for i, s in enumerate(steps):
        if _root(alias, s.output) == root:
            return i
    return len(steps)
