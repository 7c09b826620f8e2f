"""Did a run learn? Its validation accuracy against what guessing would reach.

Chance is the better of a uniform guess (1/K) and always answering the most frequent
validation label. A run is *at chance* when its best validation accuracy over the
inference modes is within three binomial standard deviations of that, i.e. not
distinguishable from guessing on a split of that size.
"""

from __future__ import annotations

import math
from typing import Any

import torch

SIGMAS = 3.0


def chance_verdict(val_accuracy: dict[str, float], labels: torch.Tensor,
                   num_classes: int) -> dict[str, Any]:
    """{"chance_accuracy", "threshold", "best_val_accuracy", "at_chance"}; None if no val split.

    ``labels``: the validation labels (N,); ``val_accuracy``: accuracy per inference mode.
    """
    n = int(labels.numel())
    if n == 0 or not val_accuracy:
        return {"chance_accuracy": None, "threshold": None, "best_val_accuracy": None,
                "at_chance": None}
    majority = float(torch.bincount(labels, minlength=num_classes).max()) / n
    chance = max(1.0 / num_classes, majority)
    threshold = chance + SIGMAS * math.sqrt(chance * (1.0 - chance) / n)
    best = max(val_accuracy.values())
    return {"chance_accuracy": round(chance, 6), "threshold": round(threshold, 6),
            "best_val_accuracy": best, "at_chance": best <= threshold}
