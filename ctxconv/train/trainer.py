"""Block-wise forward-only training.

``trainer.schedule=sequential``: block i learns from its own goodness while blocks < i
are frozen: their output is computed under ``torch.no_grad`` so no autograd graph and no
activations of earlier blocks are kept; memory is that of one block.
``simultaneous``: every block learns on every batch from its own goodness, its input
detached, so one pass over the data trains all blocks (no gradient crosses a block).
After every epoch the trainer writes a checkpoint (atomically) and a line of
``metrics.jsonl``; an interrupted run resumes from its last completed epoch.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import TensorDataset

from ctxconv.progress import ThrottledBar
from ctxconv.train import distributed
from ctxconv.train.checkpoint import CHECKPOINT_NAME, save_checkpoint
from ctxconv.train.data import make_loader
from ctxconv.train.data_gen import DataGenConfig
from ctxconv.train.device import autocast, available_memory, resolve_device, to_cpu
from ctxconv.train.distributed import DistContext
from ctxconv.train.inference import block_scores
from ctxconv.train.model import ContextualNet, per_block
from ctxconv.train.objectives import (
    OBJECTIVES,
    BlockObjective,
    EndToEndObjective,
    SimultaneousObjective,
)
from ctxconv.train.prefix_cache import PrefixCacheError, build_cache, cached_shape, plan_cache
from ctxconv.train.steps import (  # noqa: F401 (TrainingDivergedError: importers read it here)
    TrainingDivergedError,
    _epoch_seed,
    augment_batch,
    make_optimizer,
    make_scheduler,
)

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
    lr_schedule: str = "cosine"  # cosine | constant (over each block's epochs)
    #: sequential: one block after another, earlier blocks frozen; simultaneous: every
    #: block on every batch from its own loss, its input detached (decoupled greedy)
    schedule: str = "sequential"
    label_smoothing: float = 0.0  # softmax objective (and backprop): smoothed targets
    #: under torchrun: data (each process the whole model, a shard of every batch) | block
    #: (each process a stage of blocks, activations sent forward; schedule=simultaneous)
    parallel: str = "data"
    #: softmax | bce (the seed's) | contrast (generate_data pairs), or one per block
    objective: Any = "softmax"
    threshold: float = 0.0  # bce: logit = goodness - threshold
    augment: int = 0  # random translation by up to this many pixels (0 = off)
    flip: bool = False  # random horizontal flip
    eval_batch_size: int = 1000
    progress: bool = True
    device: str = "auto"  # auto (CUDA, else MPS, else CPU) | cpu | cuda | mps
    precision: str = "fp32"  # fp32 | bf16 (autocast, where the device supports it)
    cache_prefix: str = "auto"  # auto | on | off: frozen prefix output computed once per block
    cache_budget_gb: float | None = None  # cache (and data on device) budget; None: half free
    method: str = "blockwise"  # blockwise (forward-only) | backprop (end-to-end baseline)
    dist_timeout_s: float = 300.0  # torchrun: a rank waiting longer for the others fails


METHODS = ("blockwise", "backprop")
SCHEDULES = ("sequential", "simultaneous")
PARALLEL = ("data", "block")


@torch.no_grad()
def evaluate_upto(
    model: ContextualNet, data: TensorDataset, upto: int, batch_size: int
) -> tuple[float, float]:
    """(accuracy of block ``upto`` alone, accuracy of scores summed over blocks <= upto)."""
    model.eval()
    device = next(model.parameters()).device
    correct_block = correct_sum = 0
    for x, y in make_loader(data, batch_size, shuffle=False):
        x, y = x.to(device).contiguous(memory_format=torch.channels_last), y.to(device)
        scores = block_scores(model, x, upto)
        total = sum(s for i, s in enumerate(scores) if i in model.score_blocks or i == upto)
        correct_block += int((scores[upto].argmax(1) == y).sum())
        correct_sum += int((total.argmax(1) == y).sum())
    n = max(len(data), 1)
    return correct_block / n, correct_sum / n


def _row_key(row: dict[str, Any]) -> tuple[int, int]:
    return int(row["block"]), int(row["epoch"])


def repair_metrics(path: Path, progress: dict[str, Any]) -> None:
    """Before a resume: drop a torn line (a kill mid-append) and the rows of epochs after
    the checkpoint's (a kill during its write), so no epoch is logged twice."""
    if not path.is_file():
        return
    rows, torn = [], 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            _row_key(row)
        except (ValueError, KeyError, TypeError):
            torn += 1
            continue
        rows.append(row)
    last = _row_key(progress)
    kept = [r for r in rows if _row_key(r) <= last]
    if torn:
        log.warning("%s: dropped %d unreadable line(s) (a write was interrupted)", path, torn)
    if len(kept) < len(rows):
        log.warning("%s: dropped %d row(s) of epochs after the checkpoint's (block %d epoch %d);"
                    " they are trained again", path, len(rows) - len(kept), *last)
    if torn or len(kept) < len(rows):
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
        os.replace(tmp, path)


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
        device: torch.device | None = None,
        dist_ctx: DistContext | None = None,
    ) -> None:
        self.model, self.cfg, self.data_gen = model, cfg, data_gen
        self.run_dir, self.seed = Path(run_dir), seed
        self.on_epoch = on_epoch
        self.checkpoint_extra = checkpoint_extra or {}
        self.train_seconds = initial_seconds  # across resumed invocations
        self.ctx = dist_ctx or DistContext()
        self.device = device if device is not None else resolve_device(cfg.device)
        self.cache_plans: dict[int, str] = {}  # block -> what the prefix cache did, and why
        self.objectives = per_block(cfg.objective, len(model.blocks), "trainer.objective",
                                    OBJECTIVES)

    def _shared(self, block_index: int) -> int:
        """How many prefix blocks of ``block_index`` are context-free (computed once per
        image); the rest of the prefix runs under each pair's context."""
        return min(block_index, self.model.first_contextual_block)

    def _frozen_input(self, block_index: int, x: torch.Tensor) -> torch.Tensor:
        """Output of the context-free part of block ``block_index``'s prefix, no graph kept."""
        with torch.no_grad():
            for block in self.model.blocks[: self._shared(block_index)]:
                block.eval()
                x = block(x)
        return x

    def _context_prefix(self, block_index: int):
        """The frozen prefix blocks that read the context, or None when there are none."""
        start = self._shared(block_index)
        if start == block_index:
            return None

        def prefix(x: torch.Tensor, contexts: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                for block in self.model.blocks[start:block_index]:
                    block.eval()
                return self.model.features_under_contexts(x, block_index, contexts, start)

        return prefix

    def fit(
        self,
        train: TensorDataset,
        val: TensorDataset,
        progress: dict[str, Any] | None = None,
        states: dict[str, Any] | None = None,
    ) -> float:
        """Train all blocks; returns the training seconds of this call."""
        if self.cfg.method not in METHODS:
            raise ValueError(f"unknown trainer.method {self.cfg.method!r}; choose one of "
                             f"{list(METHODS)}")
        self.model.to(self.device, memory_format=torch.channels_last)  # faster convolutions
        train = TensorDataset(*self._place(train.tensors))
        if self.cfg.schedule not in SCHEDULES:
            raise ValueError(f"unknown trainer.schedule {self.cfg.schedule!r}; choose one of "
                             f"{list(SCHEDULES)}")
        if self.trains_whole_model:
            first = progress["epoch"] + 1 if progress is not None else 0
            if self.cfg.parallel == "block" and self.ctx.enabled:
                from ctxconv.train.block_parallel import fit_block_parallel

                return fit_block_parallel(self, train, val, first, states if first else None)
            return self._fit_whole(train, val, first, states if first else None)
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

    def _budget(self, place: torch.device) -> int:
        """Bytes this process may keep resident on ``place`` for data and cache."""
        if self.cfg.cache_budget_gb is not None:
            return int(self.cfg.cache_budget_gb * 2**30)
        share = self.ctx.world_size if place.type == "cpu" else 1  # ranks share the host
        return int(available_memory(place) * 0.5 / share)

    def _place(self, tensors: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """The training tensors on the device when they fit its budget, else left in place."""
        nbytes = sum(t.numel() * t.element_size() for t in tensors)
        if self.device.type == "cpu" or nbytes > self._budget(self.device):
            return tensors
        return tuple(t.to(self.device) for t in tensors)

    def _inputs(self, b: int, images: torch.Tensor, epochs: int) -> tuple[torch.Tensor, bool]:
        """Block ``b``'s training inputs: the prefix cache when planned, else the images."""
        cfg = self.cfg
        if self._shared(b) < b:
            why = f"the prefix depends on the context (block {self._shared(b)}'s conv receives it)"
            if cfg.cache_prefix == "on":
                raise PrefixCacheError(f"trainer.cache_prefix=on but {why}: each pair's input "
                                       "differs with its context; use cache_prefix=auto")
            self.cache_plans[b] = why
            return images, False
        plan = plan_cache(cfg.cache_prefix, bool(cfg.augment or cfg.flip), b,
                          cached_shape(self.model, b), len(images), self.device,
                          None if cfg.cache_budget_gb is None else self._budget(self.device),
                          share=self.ctx.world_size, epochs=epochs)  # fmt: skip
        self.cache_plans[b] = plan.reason
        if not plan.enabled:
            return images, False
        t0 = time.perf_counter()
        cache = build_cache(self.model, b, images, plan, self.device, self.data_gen.batch_size,
                            autocast(self.device, cfg.precision))
        log.info("block %d: frozen prefix cached (%s, %s) in %.1fs", b, plan.reason,
                 str(plan.dtype).removeprefix("torch."), time.perf_counter() - t0)
        return cache, True

    def _fit_block(
        self,
        b: int,
        train: TensorDataset,
        val: TensorDataset,
        first_epoch: int,
        states: dict[str, Any] | None,
    ) -> float:
        cfg, model, ctx, device = self.cfg, self.model, self.ctx, self.device
        block = model.blocks[b]
        for p in model.parameters():
            p.requires_grad_(False)
        for p in block.parameters():
            p.requires_grad_(True)
        images, labels = train.tensors
        opt, sched, steps_per_epoch = self._optimizer(block.parameters(), len(train), states)
        t_cache = time.perf_counter()
        inputs, cached = self._inputs(b, images, cfg.epochs - first_epoch)
        cache_seconds = time.perf_counter() - t_cache  # counted in the block's first epoch
        objective = BlockObjective(block, self.objectives[b], self.data_gen, cfg.threshold,
                                   cached, self._context_prefix(b), cfg.label_smoothing)
        trained = distributed.wrap(objective, ctx, device)
        return self._epochs(b, trained, inputs, labels, cached, val, first_epoch,
                            opt, sched, steps_per_epoch, cache_seconds)

    def _optimizer(self, params, n_train: int, states: dict[str, Any] | None
                   ) -> tuple[torch.optim.Optimizer, Any, int]:
        """Optimizer and schedule over ``params`` for ``cfg.epochs`` epochs of this rank's
        shard (restored from ``states`` on resume), and the steps per epoch."""
        cfg, ctx = self.cfg, self.ctx
        per_rank = self.data_gen.batch_size // ctx.world_size
        steps_per_epoch = math.ceil(math.ceil(n_train / ctx.world_size) / per_rank)
        opt = make_optimizer(params, cfg)
        sched = make_scheduler(opt, cfg, steps_per_epoch * cfg.epochs)
        if states is not None:
            opt.load_state_dict(states["optimizer"])
            sched.load_state_dict(states["scheduler"])
        return opt, sched, steps_per_epoch

    @property
    def trains_whole_model(self) -> bool:
        """Every block learns on every batch: backprop, or the simultaneous schedule."""
        return self.cfg.method == "backprop" or self.cfg.schedule == "simultaneous"

    def _fit_whole(self, train: TensorDataset, val: TensorDataset, first_epoch: int,
                   states: dict[str, Any] | None) -> float:
        """Every block at once: the backprop baseline (one loss on the summed class scores,
        gradients through every block) or the simultaneous schedule (each block's own loss
        on its detached input)."""
        model, ctx, cfg = self.model, self.ctx, self.cfg
        if cfg.method == "backprop":
            if not model.supports_onepass:
                raise ValueError("trainer.method=backprop trains context-free models (the "
                                 "baseline of the local-head recipe): set model.contextual to "
                                 "all false")
            objective: torch.nn.Module = EndToEndObjective(model, cfg.label_smoothing)
            self.cache_plans[len(model.blocks) - 1] = "backprop: no frozen prefix"
        else:
            objective = SimultaneousObjective(model, self.objectives, self.data_gen,
                                              cfg.threshold, cfg.label_smoothing)
            self.cache_plans[len(model.blocks) - 1] = "simultaneous: no frozen prefix"
        for p in model.parameters():
            p.requires_grad_(True)
        images, labels = train.tensors
        opt, sched, steps_per_epoch = self._optimizer(model.parameters(), len(train), states)
        trained = distributed.wrap(objective, ctx, self.device)
        return self._epochs(len(model.blocks) - 1, trained, images, labels, False, val,
                            first_epoch, opt, sched, steps_per_epoch, 0.0)

    def _epochs(self, b: int, trained: torch.nn.Module, inputs: torch.Tensor,
                labels: torch.Tensor, cached: bool, val: TensorDataset, first_epoch: int,
                opt: torch.optim.Optimizer, sched: Any, steps_per_epoch: int,
                cache_seconds: float) -> float:
        """The epochs of block ``b`` from ``first_epoch`` on; returns their seconds."""
        cfg, model, ctx, device = self.cfg, self.model, self.ctx, self.device
        block, amp = model.blocks[b], autocast(device, cfg.precision)
        whole = self.trains_whole_model
        trained_part = model if whole else block
        name = (cfg.method if cfg.method == "backprop" else "all blocks" if whole
                else f"block {b + 1}/{len(model.blocks)}")
        seconds = 0.0
        for epoch in range(first_epoch, cfg.epochs):
            t0 = time.perf_counter() - cache_seconds
            cache_seconds = 0.0
            seed = _epoch_seed(self.seed, b, epoch)
            torch.manual_seed(seed)  # wrong-label draws
            gen = torch.Generator().manual_seed(seed)  # augmentation
            trained_part.train()
            # running sums stay on the device: reading one waits for the GPU, so the loop
            # reads them only when the bar redraws and at the end of the epoch
            loss_sum = torch.zeros((), device=device)
            correct_sum = torch.zeros((), device=device, dtype=torch.long)
            seen = 0
            bar = ThrottledBar(steps_per_epoch, f"{name} epoch {epoch + 1}/{cfg.epochs}",
                               cfg.progress and ctx.is_main)
            for idx in self._epoch_batches(len(inputs), seed, inputs.device):
                x = inputs[idx].to(device, non_blocking=True)
                y = labels[idx.to(labels.device)].to(device, non_blocking=True)
                with amp:
                    if cached:
                        x = x.float().contiguous(memory_format=torch.channels_last)
                    else:
                        if cfg.augment or cfg.flip:
                            x = augment_batch(x, cfg.augment, cfg.flip, gen)
                        x = x.contiguous(memory_format=torch.channels_last)
                        if not whole:
                            x = self._frozen_input(b, x)
                    loss, n_correct = trained(x, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                loss_sum += loss.detach().float() * len(y)
                correct_sum += n_correct
                seen += len(y)
                bar.step(lambda s=seen, tl=loss_sum, tc=correct_sum:
                         f"loss={tl.item() / s:.4f}, acc={tc.item() / s:.3f}")
            bar.close()
            total_loss, correct = loss_sum.item(), int(correct_sum.item())
            if not math.isfinite(total_loss):
                raise TrainingDivergedError(
                    f"loss is {total_loss} in block {b} (of {len(model.blocks)}), epoch "
                    f"{epoch}: training diverged; lower trainer.lr (now {cfg.lr}) or "
                    "check the input normalisation"
                )
            total_loss, correct, seen = distributed.sum_over_ranks(
                ctx, [total_loss, correct, seen], device
            )
            seconds += self._end_epoch(b, epoch, t0, val, total_loss, correct, seen, opt, sched)
        return seconds

    def _epoch_batches(self, n: int, seed: int, place: torch.device):
        """This rank's index batches of one epoch, on ``place`` (where the inputs are): the
        whole epoch's order is moved there at once, not a small copy per batch."""
        batches = list(distributed.shard_batches(n, self.data_gen.batch_size, seed, self.ctx))
        if place.type == "cpu" or not batches:
            return batches
        order = torch.cat(batches).to(place)
        return order.split([len(b) for b in batches])

    def _end_epoch(self, b: int, epoch: int, t0: float, val: TensorDataset, total_loss: float,
                   correct: float, seen: float, opt: torch.optim.Optimizer, sched: Any) -> float:
        """Validation, metrics line and checkpoint (rank 0 only); returns the epoch's seconds."""
        cfg, model = self.cfg, self.model
        train_seconds = time.perf_counter() - t0
        self.train_seconds += train_seconds
        if not self.ctx.is_main:
            return train_seconds
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
                "state_dict": to_cpu(model.state_dict()),
                "progress": {
                    "block": b,
                    "epoch": epoch,
                    "epochs": cfg.epochs,
                    "done": b == len(model.blocks) - 1 and epoch == cfg.epochs - 1,
                },
                "optimizer": to_cpu(opt.state_dict()),
                "scheduler": sched.state_dict(),
                "train_seconds": self.train_seconds,
            },
        )
        if self.on_epoch is not None:
            self.on_epoch(row)
        return train_seconds
