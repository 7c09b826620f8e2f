"""Data-parallel training under ``torchrun``: process group, sharded batches, DDP.

``torchrun --nproc-per-node N -m ctxconv.train.cli ...`` starts N copies; each finds
its rank in the environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``). Backend ``nccl`` on GPUs, ``gloo`` on CPUs. Every rank
holds the whole model and runs the frozen prefix on its own shard; only the trained
block is wrapped in DistributedDataParallel; rank 0 alone writes the run directory.
``data.batch_size`` stays the global batch (each rank takes ``batch_size / N``), so the
same config trains the same way on any number of processes.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data.distributed import DistributedSampler

from ctxconv.train.data import make_loader

TORCHRUN_VARS = ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


DEFAULT_TIMEOUT_S = 300.0  # trainer.dist_timeout_s: how long a rank waits for the others
_timeout_s = DEFAULT_TIMEOUT_S  # of the process group this process joined


class DistributedConfigError(ValueError):
    """A torchrun environment that is incomplete or does not fit the run."""


class DistributedTimeoutError(RuntimeError):
    """A rank waited longer than ``trainer.dist_timeout_s`` for the others."""


def _is_timeout(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "timed out" in text or "timeout" in text


@contextlib.contextmanager
def naming_timeouts(ctx: DistContext, what: str) -> Iterator[None]:
    """Turn a collective's timeout into DistributedTimeoutError naming this rank."""
    try:
        yield
    except RuntimeError as exc:
        if not ctx.enabled or isinstance(exc, DistributedTimeoutError) or not _is_timeout(exc):
            raise
        raise DistributedTimeoutError(
            f"rank {ctx.rank} of {ctx.world_size} waited more than trainer.dist_timeout_s="
            f"{_timeout_s:g}s for the other ranks during {what}: a rank is stuck or has died; "
            "the job stops (its last checkpoint is intact: resume=true continues it)"
        ) from exc


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job; ``world_size == 1`` outside torchrun."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def context_from_env(env: dict[str, str] | None = None) -> DistContext:
    """Read torchrun's variables; a single process when ``WORLD_SIZE`` is unset or 1."""
    env = dict(os.environ if env is None else env)
    world = env.get("WORLD_SIZE", "1")
    if not world.isdigit() or int(world) < 1:
        raise DistributedConfigError(f"WORLD_SIZE={world!r} is not a positive integer")
    if int(world) == 1:
        return DistContext()
    missing = [v for v in TORCHRUN_VARS if not env.get(v)]
    if missing:
        raise DistributedConfigError(
            f"WORLD_SIZE={world} but {', '.join(missing)} unset: start the job with "
            "torchrun --nproc-per-node N -m ctxconv.train.cli ..."
        )
    ctx = DistContext(int(env["RANK"]), int(world), int(env["LOCAL_RANK"]))
    if not 0 <= ctx.rank < ctx.world_size:
        raise DistributedConfigError(f"RANK={ctx.rank} is outside 0..{ctx.world_size - 1}")
    return ctx


def init(ctx: DistContext, device: torch.device, batch_size: int,
         timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    """Join the process group (nccl on GPUs, gloo otherwise); no-op for one process.

    ``timeout_s``: a collective waiting longer for another rank fails (the job ends).
    """
    global _timeout_s
    if not ctx.enabled:
        return
    if batch_size % ctx.world_size:
        raise DistributedConfigError(
            f"data.batch_size={batch_size} is the global batch and must divide evenly over "
            f"{ctx.world_size} processes"
        )
    if device.type == "mps":
        raise DistributedConfigError(
            "torch.distributed has no backend for mps: use trainer.device=cpu under torchrun"
        )
    if dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    _timeout_s = float(timeout_s)
    with naming_timeouts(ctx, "joining the process group"):
        dist.init_process_group(backend, rank=ctx.rank, world_size=ctx.world_size,
                                timeout=timedelta(seconds=timeout_s))


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        with naming_timeouts(ctx, "a barrier"):
            dist.barrier()


def broadcast(ctx: DistContext, obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not ctx.enabled:
        return obj
    box = [obj]
    with naming_timeouts(ctx, "a broadcast from rank 0"):
        dist.broadcast_object_list(box, src=0)
    return box[0]


def sum_over_ranks(ctx: DistContext, values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum of ``values`` over all ranks."""
    if not ctx.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    with naming_timeouts(ctx, "the sum of the epoch's metrics"):
        dist.all_reduce(t)
    return t.tolist()


def wrap(module: nn.Module, ctx: DistContext, device: torch.device) -> nn.Module:
    """DistributedDataParallel around ``module`` (the trained block) when distributed."""
    if not ctx.enabled:
        return module
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids)


def shard_batches(
    n: int, batch_size: int, seed: int, ctx: DistContext
) -> Iterator[torch.Tensor]:
    """This rank's index batches for one epoch: a seeded shuffle of ``range(n)``, sharded.

    One process: exactly the order of ``make_loader(..., shuffle=True, seed=seed)``, so a
    run trains as it always did. Several: ``DistributedSampler`` pads the order so every
    rank gets the same number of batches (each step's all-reduce needs every rank);
    ``batch_size`` is the global batch.
    """
    if not ctx.enabled:
        yield from make_loader(range(n), batch_size, shuffle=True, seed=seed)  # type: ignore[arg-type]
        return
    sampler = DistributedSampler(range(n), num_replicas=ctx.world_size, rank=ctx.rank,
                                 shuffle=True, seed=seed)
    order = torch.tensor(list(sampler), dtype=torch.long)
    per_rank = batch_size // ctx.world_size
    yield from order.split(per_rank)
