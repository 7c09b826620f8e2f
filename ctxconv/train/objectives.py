"""Block-local objectives: how one block learns from its own goodness.

- ``bce`` (the seed's): positive pairs (true-label context) and negative pairs (a wrong
  label's context) from ``generate_data``; logit = goodness - threshold, BCE with
  positive = 1, negative = 0.
- ``softmax``: cross-entropy over the goodness under all K contexts, i.e. every wrong
  label is a negative at once. It learns much faster (see BENCHMARKS.md).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from ctxconv.train.blocks import ContextualConvBlock
from ctxconv.train.data_gen import DataGenConfig, generate_data

OBJECTIVES = ("softmax", "bce")


def block_loss(
    block: ContextualConvBlock,
    x: torch.Tensor,
    labels: torch.Tensor,
    objective: str,
    data_gen: DataGenConfig,
    threshold: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, number of samples whose true context has the highest goodness)."""
    if objective == "softmax":
        scores = block.all_class_goodness(x)  # (B, K)
        return F.cross_entropy(scores, labels), (scores.argmax(1) == labels).sum()
    if objective != "bce":
        raise ValueError(f"unknown objective {objective!r}; choose one of {OBJECTIVES}")
    batch = x.shape[0]
    images, contexts = generate_data((x, labels), data_gen)  # (2B, ...), (2B, K)
    if block.is_contextual:
        goodness = block.goodness(block(images, contexts), contexts)  # (2B,)
    else:  # the body does not see the context: run it once for both halves
        h = block(x)
        goodness = block.goodness(torch.cat([h, h]), contexts)
    targets = torch.cat([torch.ones(batch), torch.zeros(batch)]).to(goodness)
    loss = F.binary_cross_entropy_with_logits(goodness - threshold, targets)
    correct = (goodness[:batch] > goodness[batch:]).sum()  # true beats the sampled wrong label
    return loss, correct


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
    ) -> None:
        super().__init__()
        self.block, self.objective = block, objective
        self.data_gen, self.threshold = data_gen, threshold
        self.input_pooled = input_pooled

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from ctxconv.train.prefix_cache import pooled_input

        with pooled_input(self.block) if self.input_pooled else contextlib.nullcontext():
            return block_loss(self.block, x, labels, self.objective, self.data_gen, self.threshold)
