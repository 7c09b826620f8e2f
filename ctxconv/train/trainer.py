"""Block-wise forward-only training.

Block i learns from its own goodness while blocks < i are frozen: their output is
computed under ``torch.no_grad`` so no autograd graph and no activations of earlier
blocks are kept; memory is that of one block. After every epoch the trainer writes a
checkpoint (atomically) and a line of ``metrics.jsonl``; an interrupted run resumes
from its last completed epoch.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import TensorDataset

from ctxconv.train.checkpoint import CHECKPOINT_NAME, save_checkpoint
from ctxconv.train.data import make_loader
from ctxconv.train.data_gen import DataGenConfig
from ctxconv.train.model import ContextualNet
from ctxconv.train.objectives import block_loss
from ctxconv.train.progress import ThrottledBar

log = logging.getLogger(__name__)
METRICS_NAME = "metrics.jsonl"


@dataclass
class TrainerConfig:
    """How each block is trained."""

    epochs: int = 10  # per block
    optimizer: str = "adam"  # adam | sgd
    lr: float = 5e-3
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd only
    schedule: str = "cosine"  # cosine | constant (per block)
    objective: str = "softmax"  # softmax | bce (the seed's)
    threshold: float = 0.0  # bce: logit = goodness - threshold
    augment: int = 0  # random translation by up to this many pixels (0 = off)
    flip: bool = False  # random horizontal flip
    eval_batch_size: int = 1000
    progress: bool = True


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite."""


def augment_batch(x: torch.Tensor, shift: int, flip: bool, gen: torch.Generator) -> torch.Tensor:
    """Per-sample random translation (zero padded) and optional horizontal flip."""
    if shift > 0:
        b, _, h, w = x.shape
        padded = torch.nn.functional.pad(x, (shift, shift, shift, shift))
        dy = torch.randint(0, 2 * shift + 1, (b, 1, 1), generator=gen)
        dx = torch.randint(0, 2 * shift + 1, (b, 1, 1), generator=gen)
        rows = dy + torch.arange(h).view(1, h, 1)  # (B, H, 1)
        cols = dx + torch.arange(w).view(1, 1, w)  # (B, 1, W)
        x = padded.permute(0, 2, 3, 1)[torch.arange(b).view(b, 1, 1), rows, cols]
        x = x.permute(0, 3, 1, 2).contiguous()  # (B, C, H, W)
    if flip:
        mask = torch.rand(x.shape[0], generator=gen) < 0.5
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    return x


def make_optimizer(params, cfg: TrainerConfig) -> torch.optim.Optimizer:
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


def make_scheduler(opt: torch.optim.Optimizer, cfg: TrainerConfig, steps: int):
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))
    if cfg.schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    raise ValueError(f"unknown schedule {cfg.schedule!r}; choose 'cosine' or 'constant'")


@torch.no_grad()
def evaluate_upto(
    model: ContextualNet, data: TensorDataset, upto: int, batch_size: int
) -> tuple[float, float]:
    """(accuracy of block ``upto`` alone, accuracy of scores summed over blocks <= upto)."""
    model.eval()
    correct_block = correct_sum = 0
    for x, y in make_loader(data, batch_size, shuffle=False):
        x = x.contiguous(memory_format=torch.channels_last)
        total = None
        for i in range(upto + 1):
            block = model.blocks[i]
            if i < upto:  # context-free (only the last block may be contextual): one pass
                x = block(x)
                scores = block.goodness.scores(x)  # (B, K)
            else:
                scores = block.all_class_goodness(x)
            if i in model.score_blocks or i == upto:
                total = scores if total is None else total + scores
        correct_block += int((scores.argmax(1) == y).sum())
        correct_sum += int((total.argmax(1) == y).sum())
    n = max(len(data), 1)
    return correct_block / n, correct_sum / n


def _epoch_seed(seed: int, block: int, epoch: int) -> int:
    return seed * 1_000_003 + block * 1009 + epoch


class BlockwiseTrainer:
    """Trains blocks one at a time; ``fit`` resumes from ``progress`` when given."""

    def __init__(
        self,
        model: ContextualNet,
        cfg: TrainerConfig,
        data_gen: DataGenConfig,
        run_dir: Path,
        seed: int = 0,
        on_epoch: Callable[[dict[str, Any]], None] | None = None,
        checkpoint_extra: dict[str, Any] | None = None,
        initial_seconds: float = 0.0,
    ) -> None:
        self.model, self.cfg, self.data_gen = model, cfg, data_gen
        self.run_dir, self.seed = Path(run_dir), seed
        self.on_epoch = on_epoch
        self.checkpoint_extra = checkpoint_extra or {}
        self.train_seconds = initial_seconds  # across resumed invocations

    def _frozen_input(self, block_index: int, x: torch.Tensor) -> torch.Tensor:
        """Input of block ``block_index``: earlier blocks frozen, no graph kept."""
        with torch.no_grad():
            for block in self.model.blocks[:block_index]:
                block.eval()
                x = block(x)  # context-free prefix
        return x

    def _check_trainable(self) -> None:
        last = len(self.model.blocks) - 1
        if self.model.first_contextual_block < last:
            raise ValueError(
                f"block {self.model.first_contextual_block} injects context into its conv but is "
                "not the last block: later blocks are trained on the context-free prefix, so only "
                "the last block may be contextual (model.contextual)"
            )

    def fit(
        self,
        train: TensorDataset,
        val: TensorDataset,
        progress: dict[str, Any] | None = None,
        states: dict[str, Any] | None = None,
    ) -> float:
        """Train all blocks; returns the training seconds of this call."""
        self._check_trainable()
        self.model.to(memory_format=torch.channels_last)  # faster CPU convolutions
        start_block, start_epoch = 0, 0
        if progress is not None:
            start_block, start_epoch = progress["block"], progress["epoch"] + 1
            if start_epoch >= self.cfg.epochs:
                start_block, start_epoch = start_block + 1, 0
        seconds = 0.0
        for b in range(start_block, len(self.model.blocks)):
            resume = states if (b == start_block and start_epoch > 0) else None
            seconds += self._fit_block(b, train, val, start_epoch if resume else 0, resume)
        return seconds

    def _fit_block(
        self,
        b: int,
        train: TensorDataset,
        val: TensorDataset,
        first_epoch: int,
        states: dict[str, Any] | None,
    ) -> float:
        cfg, model = self.cfg, self.model
        block = model.blocks[b]
        for p in model.parameters():
            p.requires_grad_(False)
        for p in block.parameters():
            p.requires_grad_(True)
        steps_per_epoch = math.ceil(len(train) / self.data_gen.batch_size)
        opt = make_optimizer(block.parameters(), cfg)
        sched = make_scheduler(opt, cfg, steps_per_epoch * cfg.epochs)
        if states is not None:
            opt.load_state_dict(states["optimizer"])
            sched.load_state_dict(states["scheduler"])
        seconds = 0.0
        for epoch in range(first_epoch, cfg.epochs):
            t0 = time.perf_counter()
            seed = _epoch_seed(self.seed, b, epoch)
            torch.manual_seed(seed)  # wrong-label draws
            gen = torch.Generator().manual_seed(seed)  # augmentation
            loader = make_loader(train, self.data_gen.batch_size, shuffle=True, seed=seed)
            block.train()
            total_loss, correct, seen = 0.0, 0, 0
            bar = ThrottledBar(
                len(loader),
                f"block {b + 1}/{len(model.blocks)} epoch {epoch + 1}/{cfg.epochs}",
                cfg.progress,
            )
            for x, y in loader:
                if cfg.augment or cfg.flip:
                    x = augment_batch(x, cfg.augment, cfg.flip, gen)
                x = self._frozen_input(b, x.contiguous(memory_format=torch.channels_last))
                loss, n_correct = block_loss(
                    block, x, y, cfg.objective, self.data_gen, cfg.threshold
                )
                if not torch.isfinite(loss):
                    raise TrainingDivergedError(
                        f"loss is {loss.item()} in block {b} (of {len(model.blocks)}), epoch "
                        f"{epoch}: training diverged; lower trainer.lr (now {cfg.lr}) or "
                        "check the input normalisation"
                    )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total_loss += loss.item() * len(y)
                correct += int(n_correct)
                seen += len(y)
                bar.step(f"loss={total_loss / seen:.4f}, acc={correct / seen:.3f}")
            bar.close()
            train_seconds = time.perf_counter() - t0
            seconds += train_seconds
            self.train_seconds += train_seconds
            val_block, val_sum = evaluate_upto(model, val, b, cfg.eval_batch_size)
            row = {
                "block": b,
                "epoch": epoch,
                "train_loss": total_loss / max(seen, 1),
                "train_acc": correct / max(seen, 1),
                "val_acc_block": val_block,
                "val_acc": val_sum,
                "lr": opt.param_groups[0]["lr"],
                "seconds": train_seconds,
            }
            log.info(
                "block %d epoch %d: loss %.4f train %.4f val(block) %.4f val %.4f (%.1fs)",
                b,
                epoch,
                row["train_loss"],
                row["train_acc"],
                val_block,
                val_sum,
                train_seconds,
            )
            with open(self.run_dir / METRICS_NAME, "a") as f:
                f.write(json.dumps(row) + "\n")
            save_checkpoint(
                self.run_dir / CHECKPOINT_NAME,
                {
                    **self.checkpoint_extra,
                    "model_config": asdict(model.cfg),
                    "state_dict": model.state_dict(),
                    "progress": {
                        "block": b,
                        "epoch": epoch,
                        "epochs": cfg.epochs,
                        "done": b == len(model.blocks) - 1 and epoch == cfg.epochs - 1,
                    },
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "train_seconds": self.train_seconds,
                },
            )
            if self.on_epoch is not None:
                self.on_epoch(row)
        return seconds
