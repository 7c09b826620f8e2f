"""Training SRAM as explicit buffers with lifetimes, placed by TFLM's greedy planner.

One training step of block i is a fixed schedule (``FO_STEPS``); every buffer lives over
an inclusive range of those steps and ``greedy_offsets`` places them, so buffers that are
never live together share bytes. The device schedule assumed here streams the conv one
output row of one image at a time (as CMSIS-NN's partial im2col does): the im2col rows,
the pre-activation and its gradient exist for one output row and are recomputed in the
backward pass from the kept int8 block inputs; what must survive from forward to
backward is kept for the whole batch (ReLU masks bit-packed, the pooled grid z, scores
and their gradients).

Forward-only (this block trained, earlier blocks frozen int8) is set beside backprop
through the whole network (``backprop_buffers``): every block's weights, gradients and
optimizer state in float32, and every block's output kept for the backward pass.
"""

from __future__ import annotations

from dataclasses import dataclass

from ctxconv.blockgraph.geometry import BlockGeometry, trainable_names
from ctxconv.memory.greedy import ALIGNMENT, Buffer, greedy_offsets

F32 = 4  # bytes per float32
#: The steps of one forward-only training step of one block.
FO_STEPS = ("inputs", "forward", "loss", "head_backward", "body_backward", "update")
_IN, _FWD, _LOSS, _HEAD, _BODY, _UPD = range(len(FO_STEPS))


@dataclass
class NamedBuffer:
    """``size`` bytes live from step ``first`` to ``last`` (inclusive); offset once placed."""

    name: str
    size: int
    first: int
    last: int
    offset: int | None = None

    def overlaps(self, other: NamedBuffer) -> bool:
        return not (self.first > other.last or other.first > self.last)


@dataclass
class MemoryLayout:
    """Placed buffers and the greedy peak (the SRAM the step needs)."""

    buffers: list[NamedBuffer]
    peak_bytes: int
    steps: tuple[str, ...]

    @property
    def sum_bytes(self) -> int:
        """Sum of all buffers (aligned): the peak if nothing could share memory."""
        return sum(-(-b.size // ALIGNMENT) * ALIGNMENT for b in self.buffers)

    def by_name(self) -> dict[str, int]:
        return {b.name: b.size for b in self.buffers}

    def describe(self) -> str:
        lines = [f"  {'buffer':<28} {'bytes':>12} {'offset':>10}  live"]
        for b in sorted(self.buffers, key=lambda b: -b.size):
            lines.append(f"  {b.name:<28} {b.size:>12,} {b.offset:>10,}  "
                         f"{self.steps[b.first]}..{self.steps[b.last]}")
        lines.append(f"  peak {self.peak_bytes:,} B (sum of buffers {self.sum_bytes:,} B)")
        return "\n".join(lines)


def place(buffers: list[NamedBuffer], steps: tuple[str, ...]) -> MemoryLayout:
    """Place ``buffers`` with TFLM's greedy-by-size first-fit planner (16-byte aligned)."""
    live = [b for b in buffers if b.size > 0]
    offsets, peak = greedy_offsets([Buffer(b.size, b.first, b.last) for b in live], ALIGNMENT)
    for b, off in zip(live, offsets, strict=True):
        b.offset = off
    return MemoryLayout(live, peak, steps)


def body_rows(geom: BlockGeometry, batch: int, objective: str) -> int:
    """Rows through the block body per batch: B, or K*B / 2B for a contextual block."""
    if not geom.contextual:
        return batch
    return batch * (geom.num_classes if objective == "softmax" else 2)


def context_rows(geom: BlockGeometry, batch: int, objective: str) -> int:
    """One-hot contexts (or targets) held per batch."""
    if geom.contextual:
        return body_rows(geom, batch, objective)
    return batch * (2 if objective == "bce" else 1)


def forward_only_buffers(geom: BlockGeometry, batch: int, state_bytes_per_param: int,
                         objective: str = "softmax", update: str = "all",
                         prefix_bytes: int = 0) -> list[NamedBuffer]:
    """The buffers of one training step of one block (earlier blocks frozen, int8).

    ``state_bytes_per_param``: optimizer state (SGD momentum 4, Adam 8, plain SGD 0);
    ``prefix_bytes``: SRAM of the frozen int8 prefix (its TFLM arena + staging), live while
    the batch of block inputs is produced.
    """
    names = trainable_names(geom, update)
    n_train = geom.param_count(names)
    conv_w = "conv_weight" in names
    body = any(n in names for n in ("conv_weight", "conv_bias", "context_weight"))
    head_w = "head_weight" in names
    rows = body_rows(geom, batch, objective)
    per_image_map = geom.pixels * geom.filters  # H*W*O
    row_cols = F32 * geom.out_size * geom.taps  # im2col of one output row
    row_map = F32 * geom.out_size * geom.filters  # one output row of the pre-activation
    k = geom.num_classes
    bufs = [
        NamedBuffer("weights (fp32, trained)", F32 * n_train, _IN, _UPD),
        NamedBuffer("gradients (fp32)", F32 * n_train, _HEAD, _UPD),
        NamedBuffer("optimizer state", state_bytes_per_param * n_train, _IN, _UPD),
        NamedBuffer("frozen prefix (int8 arena)", prefix_bytes, _IN, _IN),
        NamedBuffer("block inputs (int8 batch)",
                    batch * geom.pixels * geom.in_channels, _IN, _BODY if conv_w else _FWD),
        NamedBuffer("contexts (fp32 one-hot)", F32 * context_rows(geom, batch, objective) * k,
                    _IN, _BODY if (body and geom.contextual) else _LOSS),
        NamedBuffer("im2col (one row)", row_cols, _FWD, _FWD),
        NamedBuffer("pre-activation (one row)", row_map, _FWD, _FWD),
        NamedBuffer("pooled grid z", F32 * rows * geom.n_flat, _FWD, _HEAD if head_w else _LOSS),
        NamedBuffer("scores", F32 * rows * k, _LOSS, _LOSS),
        NamedBuffer("score gradients", F32 * rows * k, _LOSS, _HEAD),
    ]
    if body:
        bufs += [
            NamedBuffer("ReLU masks (bits, batch)", -(-rows * per_image_map // 8), _FWD, _BODY),
            NamedBuffer("grid gradients dz", F32 * rows * geom.n_flat, _HEAD, _BODY),
            NamedBuffer("pre-act gradient (one row)", row_map, _BODY, _BODY),
        ]
    if conv_w:
        bufs.append(NamedBuffer("im2col (backward, one row)", row_cols, _BODY, _BODY))
    return [b for b in bufs if b.size > 0]


def forward_only_layout(geom: BlockGeometry, batch: int, state_bytes_per_param: int,
                        objective: str = "softmax", update: str = "all",
                        prefix_bytes: int = 0) -> MemoryLayout:
    """Placed buffers and peak SRAM of one training step of one block."""
    return place(forward_only_buffers(geom, batch, state_bytes_per_param, objective, update,
                                      prefix_bytes), FO_STEPS)


def backprop_layout(geoms: list[BlockGeometry], batch: int, state_bytes_per_param: int,
                    objective: str = "softmax") -> MemoryLayout:
    """Backprop through the whole network: the sum of every block's local loss, all
    parameters trained at once, every block output kept until its backward step."""
    n = len(geoms)
    steps = (("inputs",) + tuple(f"forward {i}" for i in range(n)) + ("loss",)
             + tuple(f"backward {i}" for i in reversed(range(n))) + ("update",))
    fwd = {i: 1 + i for i in range(n)}
    loss = n + 1
    bwd = {i: n + 2 + (n - 1 - i) for i in range(n)}
    end = len(steps) - 1
    n_params = sum(g.param_count() for g in geoms)
    g0 = geoms[0]
    bufs = [
        NamedBuffer("weights (fp32, all blocks)", F32 * n_params, 0, end),
        NamedBuffer("gradients (fp32, all blocks)", F32 * n_params, bwd[n - 1], end),
        NamedBuffer("optimizer state", state_bytes_per_param * n_params, 0, end),
        NamedBuffer("images (int8 batch)", batch * g0.in_size**2 * g0.in_channels, 0, bwd[0]),
    ]
    for i, g in enumerate(geoms):
        rows = body_rows(g, batch, objective)
        fmap = g.pixels * g.filters
        k = g.num_classes
        bufs += [
            NamedBuffer(f"block {i} contexts", F32 * context_rows(g, batch, objective) * k,
                        0, bwd[i]),
            NamedBuffer(f"block {i} im2col (one row)", F32 * g.out_size * g.taps,
                        fwd[i], fwd[i]),
            NamedBuffer(f"block {i} pre-activation (one row)", F32 * g.out_size * g.filters,
                        fwd[i], fwd[i]),
            # the output h (fp32 batch) is block i+1's input for its weight gradient, and
            # its sign is block i's ReLU mask: kept from forward i to backward i
            NamedBuffer(f"block {i} output h (fp32 batch)", F32 * rows * fmap, fwd[i], bwd[i]),
            NamedBuffer(f"block {i} pooled grid z", F32 * rows * g.n_flat, fwd[i], bwd[i]),
            NamedBuffer(f"block {i} scores", F32 * rows * k, loss, loss),
            NamedBuffer(f"block {i} score gradients", F32 * rows * k, loss, bwd[i]),
            # dL/dh of block i: from the head (and from block i+1's input gradient)
            NamedBuffer(f"block {i} output gradient (fp32 batch)", F32 * rows * fmap,
                        bwd[i + 1] if i + 1 < n else loss, bwd[i]),
            NamedBuffer(f"block {i} im2col (backward, one row)", F32 * g.out_size * g.taps,
                        bwd[i], bwd[i]),
        ]
        if i > 0:  # input gradient rows (col2im) of one image
            bufs.append(NamedBuffer(f"block {i} input-gradient cols (one row)",
                                    F32 * g.out_size * g.taps, bwd[i], bwd[i]))
    return place([b for b in bufs if b.size > 0], steps)
