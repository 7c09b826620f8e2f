"""Block-local objectives with their gradients w.r.t. the goodness (numpy, float32).

- ``softmax``: cross-entropy over the goodness under all K contexts (the default).
- ``bce``: the seed's: logit = goodness - threshold, positive pair (true label) = 1,
  negative pair (a wrong label) = 0, mean over the 2B pairs.
"""

from __future__ import annotations

import numpy as np

F32 = np.float32
OBJECTIVES = ("softmax", "bce")


def softmax_ce(goodness: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of (B, K) goodness against labels (B,); returns (loss, dL/dgoodness)."""
    g = np.asarray(goodness, F32)
    b = g.shape[0]
    shifted = g - g.max(axis=1, keepdims=True)
    log_z = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    log_p = shifted - log_z  # (B, K)
    loss = float(-log_p[np.arange(b), labels].mean())
    grad = np.exp(log_p)
    grad[np.arange(b), labels] -= 1
    return loss, (grad / F32(b)).astype(F32)


def bce_pairs(pos: np.ndarray, neg: np.ndarray, threshold: float = 0.0
              ) -> tuple[float, np.ndarray, np.ndarray]:
    """Mean BCE of positive (B,) and negative (B,) goodness; returns (loss, dpos, dneg)."""
    logits = np.concatenate([pos, neg]).astype(F32) - F32(threshold)  # (2B,)
    targets = np.concatenate([np.ones_like(pos), np.zeros_like(neg)]).astype(F32)
    per = np.maximum(logits, 0) - logits * targets + np.log1p(np.exp(-np.abs(logits)))
    sig = np.where(logits >= 0, 1 / (1 + np.exp(-logits)), np.exp(logits) / (1 + np.exp(logits)))
    grad = ((sig - targets) / F32(len(logits))).astype(F32)
    b = len(pos)
    return float(per.mean()), grad[:b], grad[b:]


def wrong_labels(labels: np.ndarray, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """A wrong label per sample, uniform over the K-1 others (offset in [1, K-1] mod K)."""
    return (labels + rng.integers(1, num_classes, size=labels.shape)) % num_classes
