"""One forward-only training step of one block: contexts, forward, local loss, backward,
optimizer update; and evaluation by the block's goodness.

Rows through the block body per batch of B images: B for a block whose conv does not see
the context (its K scores come from one pass); for a contextual block K*B (softmax: one
pass per candidate context, context-major like the host trainer) or 2B (bce: positive
and negative pairs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ctxconv.ondevice.block import TrainableBlock
from ctxconv.ondevice.losses import OBJECTIVES, bce_pairs, softmax_ce
from ctxconv.ondevice.optim import SGD, Adam

F32 = np.float32


@dataclass(frozen=True)
class StepResult:
    loss: float
    correct: int  # samples whose true context wins (bce: beats the sampled wrong one)


def all_class_goodness(block: TrainableBlock, x: np.ndarray) -> tuple[np.ndarray, Callable]:
    """Goodness (B, K) under every context, and a function mapping dL/dgoodness to the
    backward call's gradients."""
    g = block.geom
    b, k = x.shape[0], g.num_classes
    if not g.contextual:
        scores, cache = block.forward(x)
        return scores, lambda dg, names: block.backward(dg, cache, names)
    ctx = np.repeat(np.eye(k, dtype=F32), b, axis=0)  # (K*B, K), context-major
    scores, cache = block.forward(np.tile(x, (k, 1, 1, 1)), ctx)
    good = (scores * ctx).sum(axis=1).reshape(k, b).T  # (B, K)

    def back(dg: np.ndarray, names: tuple[str, ...] | None) -> dict[str, np.ndarray]:
        return block.backward(dg.T.reshape(-1)[:, None] * ctx, cache, names)

    return good, back


def local_step(block: TrainableBlock, opt: SGD | Adam, x: np.ndarray, labels: np.ndarray,
               objective: str = "softmax", names: tuple[str, ...] | None = None,
               negatives: np.ndarray | None = None, threshold: float = 0.0,
               lr: float | None = None) -> StepResult:
    """Train ``block`` on one batch x (B, H, W, Cin) float32 with labels (B,).

    ``names``: parameters to update (default all); ``negatives``: the wrong labels of the
    bce objective (B,).
    """
    names = tuple(block.params) if names is None else names
    labels = np.asarray(labels)
    b = len(labels)
    if objective == "softmax":
        good, back = all_class_goodness(block, x)
        loss, dg = softmax_ce(good, labels)
        correct = int((good.argmax(axis=1) == labels).sum())
        grads = back(dg, names)
    elif objective == "bce":
        if negatives is None:
            raise ValueError("the bce objective needs the negative (wrong) labels")
        g = block.geom
        eye = np.eye(g.num_classes, dtype=F32)
        ctx = np.concatenate([eye[labels], eye[negatives]])  # (2B, K)
        if g.contextual:
            scores, cache = block.forward(np.concatenate([x, x]), ctx)
            good = (scores * ctx).sum(axis=1)  # (2B,)
            loss, dpos, dneg = bce_pairs(good[:b], good[b:], threshold)
            ds = np.concatenate([dpos, dneg])[:, None] * ctx
        else:  # one body pass serves both halves
            scores, cache = block.forward(x)
            pos, neg = scores[np.arange(b), labels], scores[np.arange(b), negatives]
            good = np.concatenate([pos, neg])
            loss, dpos, dneg = bce_pairs(pos, neg, threshold)
            ds = np.zeros_like(scores)
            np.add.at(ds, (np.arange(b), labels), dpos)
            np.add.at(ds, (np.arange(b), negatives), dneg)
        correct = int((good[:b] > good[b:]).sum())
        grads = block.backward(ds, cache, names)
    else:
        raise ValueError(f"unknown objective {objective!r}; choose one of {OBJECTIVES}")
    if not np.isfinite(loss):
        raise FloatingPointError(f"loss is {loss}: training diverged; lower the learning rate")
    opt.step(block.params, grads, lr)
    return StepResult(loss, correct)


def accuracy(block: TrainableBlock, x: np.ndarray, labels: np.ndarray, batch: int = 500
             ) -> float:
    """Top-1 of the block's goodness over all K contexts."""
    right = 0
    for i in range(0, len(labels), batch):
        good, _ = all_class_goodness(block, x[i:i + batch])
        right += int((good.argmax(axis=1) == labels[i:i + batch]).sum())
    return right / max(len(labels), 1)
