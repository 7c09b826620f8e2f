"""Frozen-prefix cache: the input of block i over the training set, computed once.

Blocks < i do not change while block i trains, so without augmentation their output
on the training set is the same every epoch. ``trainer.cache_prefix`` computes it once
per block (followed by block i's own max-pool, which has no parameters, so the cache
is 4x smaller for a pooling block) and keeps it on the training device when it fits the
memory budget, else in host memory, in float32 or, when only that fits, bfloat16.
An epoch of block i then costs block i alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from ctxconv.train.blocks import ContextualConvBlock
from ctxconv.train.device import available_memory
from ctxconv.train.model import ContextualNet

CACHE_MODES = ("auto", "on", "off")
BUDGET_FRACTION = 0.5  # of the free memory, when trainer.cache_budget_gb is unset


class PrefixCacheError(ValueError):
    """``cache_prefix=on`` where a cache cannot be used."""


@dataclass(frozen=True)
class CachePlan:
    """Where the cache lives and in which dtype (``None``: no cache, ``reason`` says why)."""

    device: torch.device | None
    dtype: torch.dtype | None
    nbytes: int
    reason: str

    @property
    def enabled(self) -> bool:
        return self.device is not None


def cached_shape(model: ContextualNet, block: int) -> tuple[int, ...]:
    """Per-sample shape of the cached input of ``block`` (after its own max-pool)."""
    if block == 0:
        return (model.cfg.in_channels, model.cfg.image_size, model.cfg.image_size)
    size = model.blocks[block].out_size  # 'same' convolutions: the pooled input's size
    return (int(model.cfg.blocks[block - 1][1]), size, size)


def plan_cache(
    mode: str,
    augmented: bool,
    block: int,
    per_sample: tuple[int, ...],
    n: int,
    device: torch.device,
    budget_bytes: int | None = None,
    share: int = 1,
    epochs: int = 2,
) -> CachePlan:
    """Decide whether and where to cache for ``epochs`` epochs of ``block``.

    ``budget_bytes`` (None: half the free memory of each place, split between the ``share``
    processes of this node on the host) bounds the cache; the device comes first, then the
    host, float32 first, then bfloat16.
    """
    if mode not in CACHE_MODES:
        raise PrefixCacheError(
            f"unknown trainer.cache_prefix {mode!r}; choose one of {list(CACHE_MODES)}"
        )
    if mode == "off":
        return CachePlan(None, None, 0, "cache_prefix=off")
    if augmented:
        if mode == "on":
            raise PrefixCacheError(
                "trainer.cache_prefix=on needs augmentation off (trainer.augment=0, "
                "trainer.flip=false): an augmented image changes every epoch"
            )
        return CachePlan(None, None, 0, "augmentation is on")
    if block == 0:
        return CachePlan(None, None, 0, "block 0 has no frozen prefix")
    if epochs < 2 and mode == "auto":  # building the cache is one prefix pass already
        return CachePlan(None, None, 0, "one epoch to go: the prefix runs once either way")
    elements = n * int(torch.Size(per_sample).numel())
    places = [device] if device.type == "cpu" else [device, torch.device("cpu")]
    for place in places:
        split = max(share, 1) if place.type == "cpu" else 1  # each rank has its own GPU
        budget = budget_bytes if budget_bytes is not None else int(
            available_memory(place) * BUDGET_FRACTION / split)
        for dtype in (torch.float32, torch.bfloat16):
            nbytes = elements * dtype.itemsize
            if nbytes <= budget:
                return CachePlan(place, dtype, nbytes, f"{nbytes / 2**20:.0f} MiB on {place}")
    need = elements * torch.bfloat16.itemsize
    message = (f"the prefix output of block {block} needs {need / 2**20:.0f} MiB even in "
               "bfloat16, over the memory budget")
    if mode == "on":
        raise PrefixCacheError(f"trainer.cache_prefix=on but {message}; "
                               "raise trainer.cache_budget_gb or use cache_prefix=auto")
    return CachePlan(None, None, 0, message)


@torch.no_grad()
def build_cache(
    model: ContextualNet,
    block: int,
    images: torch.Tensor,
    plan: CachePlan,
    device: torch.device,
    batch_size: int,
    autocast: contextlib.AbstractContextManager | None = None,
) -> torch.Tensor:
    """pool_i(blocks[:i](x)) for every x of ``images`` (prefix in eval mode), (N, C, H, W)."""
    assert plan.enabled and plan.device is not None and plan.dtype is not None
    for b in model.blocks[:block]:
        b.eval()
    pool = model.blocks[block].body.pool
    out = None
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size].to(device, non_blocking=True)
        with autocast or contextlib.nullcontext():
            h = pool(model.features(x.contiguous(memory_format=torch.channels_last), block))
        if out is None:
            out = torch.empty((len(images), *h.shape[1:]), dtype=plan.dtype, device=plan.device)
            out = out.contiguous(memory_format=torch.channels_last)
        out[start : start + len(x)] = h.to(plan.device, plan.dtype)
    assert out is not None
    return out


@contextlib.contextmanager
def pooled_input(block: ContextualConvBlock) -> Iterator[None]:
    """Train ``block`` on cached inputs that its max-pool has already been applied to."""
    pool = block.body.pool
    block.body.pool = nn.Identity()
    try:
        yield
    finally:
        block.body.pool = pool
