"""Inference with context inputs: class scores without knowing the true label.

- ``multipass``: one pipeline run per candidate context; the blocks before the first
  contextual block, and that block's conv of its input, run once and are shared by all K
  passes; the context injection and everything after it run once per candidate. Scores
  are the goodness under each candidate, summed over the scoring blocks.
- ``onepass``: one run; each block's linear goodness gives all K scores analytically.
  Available when no block's output depends on the context; then it equals multipass.

Neither mode reads labels, so accuracy cannot depend on the true label being known.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ctxconv.train.model import ContextualNet

MODES = ("multipass", "onepass")


def block_scores(model: ContextualNet, x: torch.Tensor, upto: int | None = None
                 ) -> list[torch.Tensor]:
    """(B, K) goodness under every candidate context of each block ``<= upto`` (all blocks
    when None). Blocks before the first contextual one run once and are shared, and so
    does the first contextual block's conv of its input; from its context injection on,
    one pass per candidate context (each pass is a batch of B, so memory stays that of
    one pass)."""
    last = len(model.blocks) - 1 if upto is None else upto
    batch, k = x.shape[0], model.num_classes
    shared = min(model.first_contextual_block, last + 1)
    out = []
    h = x
    for block in model.blocks[:shared]:  # context-free: computed once
        h = block(h)
        out.append(block.goodness.scores(h))  # linear goodness: all K scores analytically
    per_context = [torch.zeros(batch, k, device=x.device, dtype=x.dtype)
                   for _ in range(shared, last + 1)]
    if not per_context:
        return out
    eye = torch.eye(k, device=x.device, dtype=x.dtype)
    first = model.blocks[shared]  # its conv of the image is context-free: computed once
    conv_of_image = first.body.shared(h)
    for c in range(k):
        context = eye[c].expand(batch, k)
        hc = first.body.per_context(conv_of_image, context)
        per_context[0][:, c] = first.goodness(hc, context)
        for scores, block in zip(per_context[1:], model.blocks[shared + 1:last + 1],
                                 strict=True):
            hc = block(hc, context)
            scores[:, c] = block.goodness(hc, context)
    return out + per_context


@torch.no_grad()
def multipass_scores(model: ContextualNet, x: torch.Tensor) -> torch.Tensor:
    """(B, K) scores, computing each block's goodness once per candidate context."""
    scores = block_scores(model, x)
    total = torch.zeros_like(scores[0])
    for i in model.score_blocks:
        total += scores[i]
    return total


def summed_scores(model: ContextualNet, x: torch.Tensor) -> torch.Tensor:
    """(B, K) sum of the scoring blocks' linear goodness scores, autograd left on."""
    if not model.supports_onepass:
        raise ValueError(
            "onepass needs every block context-free with linear goodness; "
            "this model injects context into a conv: use mode=multipass"
        )
    total = None
    h = x
    for i, block in enumerate(model.blocks):
        h = block(h)
        if i in model.score_blocks:
            s = block.goodness.scores(h)
            total = s if total is None else total + s
    assert total is not None
    return total


@torch.no_grad()
def onepass_scores(model: ContextualNet, x: torch.Tensor) -> torch.Tensor:
    """(B, K) scores from a single pass (requires ``model.supports_onepass``)."""
    return summed_scores(model, x)


def class_scores(model: ContextualNet, x: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "multipass":
        return multipass_scores(model, x)
    if mode == "onepass":
        return onepass_scores(model, x)
    raise ValueError(f"unknown inference mode {mode!r}; choose one of {MODES}")


def available_modes(model: ContextualNet) -> list[str]:
    return [m for m in MODES if m != "onepass" or model.supports_onepass]


@torch.no_grad()
def predict(model: ContextualNet, loader, mode: str,
            on_batch: Callable[..., None] | None = None) -> torch.Tensor:
    """Predicted labels for every sample of ``loader`` (labels are never read);
    ``on_batch(n=samples)`` after each batch."""
    model.eval().to(memory_format=torch.channels_last)  # the trainer's fast CPU layout
    device = next(model.parameters()).device
    preds = []
    for batch in loader:
        x = batch[0].to(device).contiguous(memory_format=torch.channels_last)
        preds.append(class_scores(model, x, mode).argmax(1).cpu())
        if on_batch is not None:
            on_batch(n=len(x))
    return torch.cat(preds)


@torch.no_grad()
def evaluate(model: ContextualNet, loader, mode: str,
             on_batch: Callable[..., None] | None = None) -> float:
    """Top-1 accuracy of ``mode`` on ``loader``."""
    preds = predict(model, loader, mode, on_batch)
    labels = torch.cat([batch[1] for batch in loader])
    return float((preds == labels).float().mean())


class LabelLeakError(RuntimeError):
    """Predictions changed with the labels: the test-time procedure reads them."""


def assert_label_free(predict_with, labels: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Predictions of ``predict_with(labels | None)`` with the true labels, shuffled labels and
    none; LabelLeakError unless all three are identical (not merely close). Returns them.

    ``predict_with`` is any test-time procedure that could see labels (a loader of (x, y),
    an export's test vectors, a simulator run); a correct one never reads them.
    """
    gen = torch.Generator().manual_seed(seed)
    shuffled = labels[torch.randperm(len(labels), generator=gen)]
    reference = predict_with(labels)
    for name, given in (("shuffled", shuffled), ("withheld", None)):
        other = predict_with(given)
        changed = int((torch.as_tensor(other) != torch.as_tensor(reference)).sum())
        if changed:
            raise LabelLeakError(f"{changed} of {len(labels)} predictions changed when the "
                                 f"labels were {name}: the test-time procedure reads labels")
    return torch.as_tensor(reference)
