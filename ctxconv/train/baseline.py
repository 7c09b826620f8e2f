"""The backprop baseline and training-memory accounting, for side-by-side comparison.

``train_backprop`` trains the same ``ContextualNet`` end to end: one cross-entropy on
the summed class scores of all blocks, gradients through every block.
``training_memory`` counts the bytes a training step keeps alive: weights, gradients,
optimizer state and the activations autograd saves for the backward pass (measured
with saved-tensor hooks, so it is exact and independent of the allocator).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from ctxconv.train.data import make_loader
from ctxconv.train.data_gen import DataGenConfig
from ctxconv.train.inference import summed_scores
from ctxconv.train.model import ContextualNet
from ctxconv.train.objectives import block_loss
from ctxconv.train.trainer import TrainerConfig, augment_batch, make_optimizer, make_scheduler


def train_backprop(model: ContextualNet, train: TensorDataset, cfg: TrainerConfig,
                   batch_size: int, seed: int = 0) -> float:
    """End-to-end training for ``cfg.epochs`` epochs; returns seconds."""
    model.to(memory_format=torch.channels_last).train()
    opt = make_optimizer(model.parameters(), cfg)
    sched = make_scheduler(opt, cfg, math.ceil(len(train) / batch_size) * cfg.epochs)
    t0 = time.perf_counter()
    for epoch in range(cfg.epochs):
        gen = torch.Generator().manual_seed(seed * 7919 + epoch)
        for x, y in make_loader(train, batch_size, shuffle=True, seed=seed * 7919 + epoch):
            if cfg.augment or cfg.flip:
                x = augment_batch(x, cfg.augment, cfg.flip, gen)
            x = x.contiguous(memory_format=torch.channels_last)
            loss = F.cross_entropy(summed_scores(model, x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return time.perf_counter() - t0


@dataclass
class TrainingMemory:
    """Bytes alive during one training step."""

    weights: int  # every weight the forward pass reads
    gradients: int
    optimizer_state: int  # Adam: two moments per trained weight
    saved_activations: int  # what autograd keeps for the backward pass
    input_batch: int

    @property
    def total(self) -> int:
        return (self.weights + self.gradients + self.optimizer_state + self.saved_activations
                + self.input_batch)


def _saved_bytes(fn) -> int:
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        if t.layout == torch.strided and not isinstance(t, torch.nn.Parameter):
            storage = t.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def _param_bytes(params) -> int:
    return sum(p.numel() * p.element_size() for p in params)


def training_memory(model: ContextualNet, x: torch.Tensor, y: torch.Tensor,
                    block: int | None, objective: str = "softmax") -> TrainingMemory:
    """Memory of a step training ``block`` forward-only, or the whole net (block=None)."""
    model.train()
    all_params = list(model.parameters())
    if block is None:
        trained = all_params
        saved = _saved_bytes(lambda: F.cross_entropy(summed_scores(model, x), y).backward())
        batch_bytes = x.numel() * x.element_size()
    else:
        trained = list(model.blocks[block].parameters())
        with torch.no_grad():
            h = model.features(x, block)  # frozen prefix: no graph, no saved tensors
        data_gen = DataGenConfig(num_classes=model.num_classes)
        saved = _saved_bytes(
            lambda: block_loss(model.blocks[block], h, y, objective, data_gen)[0].backward())
        batch_bytes = x.numel() * x.element_size() + h.numel() * h.element_size()
    model.zero_grad(set_to_none=True)
    weights = _param_bytes(all_params if block is None else
                           [p for b in model.blocks[: block + 1] for p in b.parameters()])
    return TrainingMemory(weights=weights, gradients=_param_bytes(trained),
                          optimizer_state=2 * _param_bytes(trained), saved_activations=saved,
                          input_batch=batch_bytes)
