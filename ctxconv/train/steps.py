"""What every training loop shares: the optimizer and its learning-rate schedule, the
augmentation, the per-epoch seeds and the divergence error."""

from __future__ import annotations

from typing import Protocol

import torch


class OptimizerSettings(Protocol):
    """The fields of ``TrainerConfig`` the optimizer and its schedule read."""

    optimizer: str
    lr: float
    weight_decay: float
    momentum: float
    lr_schedule: str


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite."""


def _to(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` (on the CPU) on ``device``; to a GPU through pinned memory, without waiting."""
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def augment_batch(x: torch.Tensor, shift: int, flip: bool, gen: torch.Generator) -> torch.Tensor:
    """Per-sample random translation (zero padded) and optional horizontal flip."""
    if shift > 0:
        b, _, h, w = x.shape
        padded = torch.nn.functional.pad(x, (shift, shift, shift, shift))
        dev = x.device  # random draws on the CPU generator: the same on every device
        dy = _to(torch.randint(0, 2 * shift + 1, (b, 1, 1), generator=gen), dev)
        dx = _to(torch.randint(0, 2 * shift + 1, (b, 1, 1), generator=gen), dev)
        rows = dy + torch.arange(h, device=dev).view(1, h, 1)  # (B, H, 1)
        cols = dx + torch.arange(w, device=dev).view(1, 1, w)  # (B, 1, W)
        batch = torch.arange(b, device=dev).view(b, 1, 1)
        x = padded.permute(0, 2, 3, 1)[batch, rows, cols]
        x = x.permute(0, 3, 1, 2).contiguous()  # (B, C, H, W)
    if flip:
        mask = _to(torch.rand(x.shape[0], generator=gen) < 0.5, x.device)
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    return x


def make_optimizer(params, cfg: OptimizerSettings) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=cfg.lr,
            momentum=cfg.momentum,
            weight_decay=cfg.weight_decay,
            nesterov=cfg.momentum > 0,
        )
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; choose 'adam' or 'sgd'")


def make_scheduler(opt: torch.optim.Optimizer, cfg: OptimizerSettings, steps: int):
    if cfg.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))
    if cfg.lr_schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    raise ValueError(f"unknown lr_schedule {cfg.lr_schedule!r}; choose 'cosine' or 'constant'")


def _epoch_seed(seed: int, block: int, epoch: int) -> int:
    return seed * 1_000_003 + block * 1009 + epoch
