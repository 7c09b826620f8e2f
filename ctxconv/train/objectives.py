"""Block-local objectives: how one block learns from its own goodness.

- ``bce`` (the seed's): positive pairs (true-label context) and negative pairs (wrong
  labels' contexts) from ``generate_data``; logit = goodness - threshold, BCE with
  positive = 1, negative = 0.
- ``contrast``: the same ``generate_data`` pairs, cross-entropy of the positive among its
  image's 1 + n contexts (n = ``data_gen.negatives``). For n = 1 it is
  softplus(g_neg - g_pos), the symmetric loss of SymBa (Lee & Song, 2023): no threshold.
- ``softmax``: cross-entropy over the goodness under all K contexts, i.e. every wrong
  label is a negative at once (``contrast`` with n = K - 1 in expectation). It learns
  much faster than ``bce`` (see BENCHMARKS.md).

``EndToEndObjective`` is the backprop baseline's loss (``trainer.method=backprop``).

A block whose input depends on the context (an earlier conv receives it) is given its
frozen ``prefix``: each pair's input is computed under the pair's own context, without
an autograd graph.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ctxconv.train.blocks import ContextualConvBlock
from ctxconv.train.data_gen import DataGenConfig, generate_data
from ctxconv.train.inference import summed_scores
from ctxconv.train.model import ContextualNet

OBJECTIVES = ("softmax", "bce", "contrast")

#: ``prefix(x, contexts)``: the frozen blocks between the shared input ``x`` (B, ...) and
#: the trained block, run under each row of ``contexts`` (R*B, K), context-major, with no
#: graph; returns the trained block's (R*B, ...) inputs.
Prefix = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _under_contexts(block: ContextualConvBlock, x: torch.Tensor, contexts: torch.Tensor,
                    prefix: Prefix | None) -> torch.Tensor:
    """Goodness of ``block`` for the input ``x`` (B, ...) under each row of ``contexts``
    (R*B, K), context-major, (R*B,). Nothing context-free is computed twice: a block
    whose body ignores the context runs once and its linear goodness is read off for every
    context; a contextual conv computes the conv of ``x`` once (``under_contexts``)."""
    if prefix is not None:
        return block.goodness(block(prefix(x, contexts), contexts), contexts)
    if block.is_contextual:
        return block.goodness(block.under_contexts(x, contexts), contexts)
    scores = block.all_class_goodness(x)  # (B, K), one pass: linear in the context
    return (scores.repeat(len(contexts) // len(x), 1) * contexts).sum(dim=1)


def _all_contexts(block: ContextualConvBlock, x: torch.Tensor,
                  prefix: Prefix | None) -> torch.Tensor:
    """(B, K) goodness under every candidate context."""
    if prefix is None:
        return block.all_class_goodness(x)
    batch, k = x.shape[0], block.num_classes
    contexts = torch.eye(k, device=x.device, dtype=x.dtype).repeat_interleave(batch, dim=0)
    return _under_contexts(block, x, contexts, prefix).view(k, batch).T


def _pair_goodness(block: ContextualConvBlock, x: torch.Tensor, labels: torch.Tensor,
                   data_gen: DataGenConfig, prefix: Prefix | None) -> torch.Tensor:
    """Goodness of the ``generate_data`` pairs, ((1 + n) B,), positives first.

    The pairs' images are ``x`` repeated context-major; only their contexts are taken
    from ``generate_data`` (given a zero-width view of ``x``, so nothing is copied), and
    the context-free work on ``x`` is shared by every pair of an image."""
    _, contexts = generate_data((x[:, :0], labels), data_gen)  # ((1+n)B, K)
    return _under_contexts(block, x, contexts, prefix)


def softmax_loss(scores: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy over the K class scores (B, K), and the samples they classify right."""
    loss = F.cross_entropy(scores, labels, label_smoothing=label_smoothing)
    return loss, (scores.argmax(1) == labels).sum()


def pair_loss(goodness: torch.Tensor, batch: int, objective: str, threshold: float = 0.0
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """``contrast`` or ``bce`` loss of the ``generate_data`` pairs' goodness ((1 + n) B,),
    positives first, and the images whose true context beats all of its negatives."""
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; choose one of {OBJECTIVES}")
    per_image = goodness.view(-1, batch).T  # (B, 1+n): the positive, then the negatives
    correct = (per_image[:, :1] > per_image[:, 1:]).all(dim=1).sum()  # true beats its negatives
    if objective == "contrast":
        target = torch.zeros(batch, dtype=torch.long, device=goodness.device)
        return F.cross_entropy(per_image, target), correct
    targets = torch.zeros_like(goodness)
    targets[:batch] = 1.0
    return F.binary_cross_entropy_with_logits(goodness - threshold, targets), correct


def block_loss(
    block: ContextualConvBlock,
    x: torch.Tensor,
    labels: torch.Tensor,
    objective: str,
    data_gen: DataGenConfig,
    threshold: float = 0.0,
    prefix: Prefix | None = None,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, number of samples whose true context has the highest goodness)."""
    if objective == "softmax":
        return softmax_loss(_all_contexts(block, x, prefix), labels, label_smoothing)
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; choose one of {OBJECTIVES}")
    goodness = _pair_goodness(block, x, labels, data_gen, prefix)
    return pair_loss(goodness, x.shape[0], objective, threshold)


def scores_loss(scores: torch.Tensor, labels: torch.Tensor, objective: str,
                data_gen: DataGenConfig, threshold: float = 0.0, label_smoothing: float = 0.0
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """``block_loss`` of a block whose goodness is linear in the context, from its K class
    scores (B, K): a pair's goodness is its context's score."""
    if objective == "softmax":
        return softmax_loss(scores, labels, label_smoothing)
    _, contexts = generate_data((scores[:, :0], labels), data_gen)  # ((1+n)B, K)
    goodness = (scores.repeat(len(contexts) // len(scores), 1) * contexts).sum(dim=1)
    return pair_loss(goodness, len(labels), objective, threshold)


class BlockObjective(torch.nn.Module):
    """A block with its local loss as ``forward``, the unit DistributedDataParallel wraps.

    ``input_pooled``: the inputs come from the prefix cache, the block's max-pool applied.
    """

    def __init__(
        self,
        block: ContextualConvBlock,
        objective: str,
        data_gen: DataGenConfig,
        threshold: float = 0.0,
        input_pooled: bool = False,
        prefix: Prefix | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        self.block, self.objective = block, objective
        self.data_gen, self.threshold = data_gen, threshold
        self.label_smoothing = label_smoothing
        self.input_pooled = input_pooled
        self.prefix = prefix

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from ctxconv.train.prefix_cache import pooled_input

        with pooled_input(self.block) if self.input_pooled else contextlib.nullcontext():
            return block_loss(self.block, x, labels, self.objective, self.data_gen,
                              self.threshold, self.prefix, self.label_smoothing)


class EndToEndObjective(torch.nn.Module):
    """The whole network with the backprop loss as ``forward`` (what DDP wraps): one
    cross-entropy on the summed class scores, gradients through every block."""

    def __init__(self, model: ContextualNet, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.model, self.label_smoothing = model, label_smoothing

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return softmax_loss(summed_scores(self.model, x), labels, self.label_smoothing)


class SimultaneousObjective(torch.nn.Module):
    """Every block's local loss on one batch, summed (``trainer.schedule=simultaneous``).

    Block i reads block i-1's output detached: its gradient stays inside the block, as in
    the sequential schedule, but all blocks learn from every batch (decoupled greedy
    learning, Belilovsky et al., ICML 2020). Needs blocks that pass a context-free output
    on and a goodness linear in the context (``ContextualNet.supports_onepass``). The count
    returned is of the samples the summed scores of ``score_blocks`` classify right."""

    def __init__(self, model: ContextualNet, objectives: list[str], data_gen: DataGenConfig,
                 threshold: float = 0.0, label_smoothing: float = 0.0) -> None:
        super().__init__()
        if not model.supports_onepass:
            raise ValueError("trainer.schedule=simultaneous trains blocks whose output does "
                             "not depend on the context, with linear goodness: set "
                             "model.contextual to all false and model.goodness=linear")
        self.model, self.objectives = model, objectives
        self.data_gen, self.threshold = data_gen, threshold
        self.label_smoothing = label_smoothing

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        total, summed, _ = self.stage(x, labels, range(len(self.model.blocks)))
        assert summed is not None  # a model has a block to score
        return total, (summed.argmax(1) == labels).sum()

    def stage(self, x: torch.Tensor, labels: torch.Tensor, blocks: range,
              summed: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Blocks ``blocks`` on ``x`` (the first one's input), each on its detached input:
        the sum of their losses, ``summed`` plus the class scores of those in
        ``score_blocks`` (float32; None while there are none) and the last one's output."""
        total = None
        for i in blocks:
            block = self.model.blocks[i]
            x = block(x.detach())
            scores = block.goodness.scores(x)  # (B, K)
            loss, _ = scores_loss(scores, labels, self.objectives[i], self.data_gen,
                                  self.threshold, self.label_smoothing)
            total = loss if total is None else total + loss
            if i in self.model.score_blocks:
                scores = scores.detach().float()
                summed = scores if summed is None else summed + scores
        assert total is not None  # a stage has at least one block
        return total, summed, x
