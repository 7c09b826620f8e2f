"""Block-parallel training under ``torchrun`` (``trainer.parallel=block``).

Each process holds a contiguous stage of the blocks and trains it on every batch from
the blocks' own losses (the simultaneous schedule): a stage sends its output forward to
the next process right after its forward pass and goes on with its backward pass and the
next batch. No gradient crosses a block, so no process waits for another's backward pass
(no backward locking); a stage waits only for its input. The batches, their order and
the augmentation are those of one process (every process draws the same; the first stage
alone augments), so the weights equal those of the simultaneous schedule on one process.
After every epoch the stages' weights and optimizer states are gathered on rank 0, which
validates and writes the checkpoint; resume needs the same number of processes.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import TensorDataset

from ctxconv.train import distributed
from ctxconv.train.data import make_loader
from ctxconv.train.device import autocast, to_cpu
from ctxconv.train.distributed import DistributedConfigError
from ctxconv.train.objectives import SimultaneousObjective
from ctxconv.train.steps import (
    TrainingDivergedError,
    _epoch_seed,
    augment_batch,
    make_optimizer,
    make_scheduler,
)

IN_FLIGHT = 4  # sends a stage may have outstanding before it waits for the oldest


def stage_blocks(blocks: int, processes: int) -> list[range]:
    """Contiguous stages of about equal block counts, one per process."""
    if processes > blocks:
        raise DistributedConfigError(
            f"trainer.parallel=block puts at least one block on each process: {processes} "
            f"processes for {blocks} blocks; start at most {blocks} (torchrun "
            f"--nproc-per-node {blocks}) or use trainer.parallel=data")
    bounds = [round(i * blocks / processes) for i in range(processes + 1)]
    return [range(bounds[i], bounds[i + 1]) for i in range(processes)]


class StageStates:
    """Every stage's optimizer (or schedule) state as one checkpoint entry."""

    def __init__(self, states: list[Any], lr: float) -> None:
        self.states = states
        self.param_groups = [{"lr": lr}]  # rank 0's, for the metrics line

    def state_dict(self) -> dict[str, Any]:
        return {"stages": self.states}


def stage_state(states: dict[str, Any] | None, key: str, rank: int, world: int) -> Any:
    """This rank's part of a resumed checkpoint's ``key`` (optimizer or scheduler)."""
    if states is None:
        return None
    entry = states.get(key) or {}
    stages = entry.get("stages") if isinstance(entry, dict) else None
    if stages is None or len(stages) != world:
        have = "one process or data-parallel" if stages is None else f"{len(stages)} processes"
        raise DistributedConfigError(
            f"this run's checkpoint was written by {have}; resume it as it was trained "
            f"(torchrun --nproc-per-node {len(stages) if stages else 1}), not with {world}")
    return stages[rank]


def fit_block_parallel(trainer, train: TensorDataset, val: TensorDataset, first_epoch: int,
                       states: dict[str, Any] | None) -> float:
    """Train this rank's stage for the remaining epochs; returns their seconds."""
    model, cfg, ctx, device = trainer.model, trainer.cfg, trainer.ctx, trainer.device
    n_blocks = len(model.blocks)
    mine = stage_blocks(n_blocks, ctx.world_size)[ctx.rank]
    first, last = mine.start == 0, mine.stop == n_blocks
    for p in model.parameters():
        p.requires_grad_(False)
    params = [p for i in mine for p in model.blocks[i].parameters()]
    for p in params:
        p.requires_grad_(True)
    batch = trainer.data_gen.batch_size
    images, labels = train.tensors
    steps = math.ceil(len(images) / batch)
    opt = make_optimizer(params, cfg)
    sched = make_scheduler(opt, cfg, steps * cfg.epochs)
    if states is not None:
        opt.load_state_dict(stage_state(states, "optimizer", ctx.rank, ctx.world_size))
        sched.load_state_dict(stage_state(states, "scheduler", ctx.rank, ctx.world_size))
    in_shape = (_input_shape(model, mine.start),)
    k, amp = model.num_classes, autocast(device, cfg.precision)
    trainer.cache_plans[n_blocks - 1] = "block-parallel: no frozen prefix"
    stage = SimultaneousObjective(model, trainer.objectives, trainer.data_gen, cfg.threshold,
                                  cfg.label_smoothing)
    seconds = 0.0
    for epoch in range(first_epoch, cfg.epochs):
        t0 = time.perf_counter()
        seed = _epoch_seed(trainer.seed, n_blocks - 1, epoch)
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        for i in mine:
            model.blocks[i].train()
        loss_sum = torch.zeros((), device=device)
        correct_sum = torch.zeros((), device=device, dtype=torch.long)
        seen, pending = 0, []
        for idx in make_loader(range(len(images)), batch, shuffle=True, seed=seed):  # type: ignore[arg-type]
            y = labels[idx].to(device, non_blocking=True)
            if first:
                x = images[idx.to(images.device)].to(device, non_blocking=True)
                if cfg.augment or cfg.flip:
                    x = augment_batch(x, cfg.augment, cfg.flip, gen)
                summed = None
            else:
                x = torch.empty((len(idx), *in_shape[0]), device=device)
                summed = torch.empty((len(idx), k), device=device)
                with distributed.naming_timeouts(ctx, "receiving a stage's input"):
                    dist.recv(x, src=ctx.rank - 1)
                    dist.recv(summed, src=ctx.rank - 1)
            x = x.contiguous(memory_format=torch.channels_last)
            with amp:
                total, summed = _stage_loss(trainer, stage, mine, x, y, summed, pending, last)
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            sched.step()
            loss_sum += total.detach().float() * len(y)
            if last:
                correct_sum += (summed.argmax(1) == y).sum()
            seen += len(y)
            while len(pending) > 2 * IN_FLIGHT:
                pending.pop(0).wait()
        for work in pending:
            work.wait()
        total_loss = loss_sum.item()
        if not math.isfinite(total_loss):
            raise TrainingDivergedError(
                f"loss is {total_loss} in blocks {mine.start}-{mine.stop - 1} (of {n_blocks}), "
                f"epoch {epoch}: training diverged; lower trainer.lr (now {cfg.lr}) or check "
                "the input normalisation")
        total_loss, correct, seen_all = distributed.sum_over_ranks(
            ctx, [total_loss, int(correct_sum.item()) if last else 0, seen if last else 0],
            device)
        gathered = _gather_stages(trainer, mine, opt, sched)
        lr = opt.param_groups[0]["lr"]
        seconds += trainer._end_epoch(
            n_blocks - 1, epoch, t0, val, total_loss, correct, seen_all,
            StageStates([g["optimizer"] for g in gathered] if gathered else [], lr),
            StageStates([g["scheduler"] for g in gathered] if gathered else [], lr))
    return seconds


def _input_shape(model, block: int) -> tuple[int, int, int]:
    """Per-sample shape of block ``block``'s input: the previous block's output."""
    if block == 0:
        return (model.cfg.in_channels, model.cfg.image_size, model.cfg.image_size)
    return (int(model.cfg.blocks[block - 1][1]), model.blocks[block - 1].out_size,
            model.blocks[block - 1].out_size)


def _stage_loss(trainer, stage: SimultaneousObjective, mine: range, x: torch.Tensor,
                y: torch.Tensor, summed: torch.Tensor | None, pending: list, last: bool):
    """The stage's blocks on ``x``: the sum of their losses and the running class scores;
    the stage's output goes to the next process as soon as it is computed."""
    total, summed, x = stage.stage(x, y, mine, summed)
    if summed is None:
        summed = torch.zeros((len(y), trainer.model.num_classes), device=x.device)
    if not last:  # forward first: the next stage starts before this one's backward pass
        out, scores_out = x.detach().float().contiguous(), summed.contiguous()
        pending.append(dist.isend(out, dst=trainer.ctx.rank + 1))
        pending.append(dist.isend(scores_out, dst=trainer.ctx.rank + 1))
    return total, summed


def _gather_stages(trainer, mine: range, opt, sched) -> list[dict[str, Any]] | None:
    """Every stage's blocks and optimizer state on rank 0 (loaded into its model there);
    the list of stages on rank 0, None elsewhere."""
    ctx, model = trainer.ctx, trainer.model
    mine_state = {"blocks": {i: to_cpu(model.blocks[i].state_dict()) for i in mine},
                  "optimizer": to_cpu(opt.state_dict()), "scheduler": sched.state_dict()}
    box = [None] * ctx.world_size if ctx.is_main else None
    with distributed.naming_timeouts(ctx, "gathering the stages' weights"):
        dist.gather_object(mine_state, box, dst=0)
    if not ctx.is_main:
        return None
    device = trainer.device
    for stage in box:
        for i, state in stage["blocks"].items():
            model.blocks[int(i)].load_state_dict({k: v.to(device) for k, v in state.items()})
    return box
