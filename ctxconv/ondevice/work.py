"""MACs of one training step, forward-only (one block) and backprop (whole network).

Float32 MACs: conv (H*W*O*k*k*Cin per body row), context projection (O*K), head (g*g*O*K);
backward: head weight gradient and dz (g*g*O*K each), conv weight gradient (same as the
conv), context weight gradient (O*K); backprop adds the input gradient of every block
but the first (same as its conv). Optimizer updates are counted as MAC-equivalents per
trained parameter (``UPDATE_OPS``). Elementwise work (ReLU, pooling, im2col copies) is
left out: a first-order model like ``cost.estimate_latency``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ctxconv.blockgraph.geometry import BlockGeometry, trainable_names
from ctxconv.memory.training import body_rows

#: Multiply-adds per parameter of one update: SGD momentum (buf, nesterov, step),
#: Adam (two moments, bias correction, sqrt/divide counted as a few MACs).
UPDATE_OPS = {"sgd": 3, "adam": 8}


@dataclass(frozen=True)
class StepWork:
    """Float32 MACs of one training step (whole batch)."""

    forward: int
    backward: int
    update: int

    @property
    def total(self) -> int:
        return self.forward + self.backward + self.update

    def as_dict(self) -> dict[str, int]:
        return {**asdict(self), "total": self.total}


def _forward_macs(g: BlockGeometry) -> int:
    ctx = g.filters * g.num_classes if g.contextual else 0
    return g.pixels * g.filters * g.taps + ctx + g.n_flat * g.num_classes


def forward_only_work(g: BlockGeometry, batch: int, optimizer: str, objective: str = "softmax",
                      update: str = "all") -> StepWork:
    names = trainable_names(g, update)
    rows = body_rows(g, batch, objective)
    head = g.n_flat * g.num_classes
    back = 0
    if "head_weight" in names:
        back += head
    if any(n in names for n in ("conv_weight", "conv_bias", "context_weight")):
        back += head  # dz = dscores @ W_head
    if "conv_weight" in names:
        back += g.pixels * g.filters * g.taps
    if "context_weight" in names:
        back += g.filters * g.num_classes
    return StepWork(rows * _forward_macs(g), rows * back,
                    UPDATE_OPS[optimizer] * g.param_count(names))


def backprop_work(geoms: list[BlockGeometry], batch: int, optimizer: str,
                  objective: str = "softmax") -> StepWork:
    fwd = back = 0
    for i, g in enumerate(geoms):
        rows = body_rows(g, batch, objective)
        conv = g.pixels * g.filters * g.taps
        ctx = g.filters * g.num_classes if g.contextual else 0
        fwd += rows * _forward_macs(g)
        back += rows * (2 * g.n_flat * g.num_classes + conv + ctx + (conv if i > 0 else 0))
    n = sum(g.param_count() for g in geoms)
    return StepWork(fwd, back, UPDATE_OPS[optimizer] * n)
