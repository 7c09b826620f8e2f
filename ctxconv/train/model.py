"""Model factory: a stack of ``ContextualConvBlock`` built from a config list.

``blocks: [[pool, filters, kernel], ...]`` with a per-block ``contextual`` flag (does the
block's conv receive the context?). The resolved ``ModelConfig`` travels inside every
checkpoint, so export and simulation never need the training config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ctxconv.train.blocks import GOODNESS, ContextualConvBlock


@dataclass
class ModelConfig:
    """Architecture of a contextual network; geometry fields are filled from the data."""

    blocks: list[list[int]] = field(default_factory=lambda: [[1, 32, 3], [2, 64, 3]])
    contextual: list[bool] | None = None  # per block: conv receives context; None = all False
    injection: str = "bias"  # how a contextual conv receives the context: bias|film|bias+film
    #: of the blocks whose output depends on the context: linear | energy, or one per block
    #: (e.g. [energy, energy, linear]: forward-forward blocks, then a local linear classifier)
    goodness: Any = "linear"
    norm: str = "batch"  # batch (folds into the conv at export) | l2 | none
    max_grid: int = 4  # the linear goodness pools each block output to at most g x g cells
    score_blocks: list[int] | None = None  # blocks whose goodness is summed; None = all
    in_channels: int = 1
    image_size: int = 8
    num_classes: int = 10


def per_block(value: Any, blocks: int, key: str, choices: tuple[str, ...]) -> list[str]:
    """``value`` (one choice, or a list of one per block) as a list of ``blocks`` choices."""
    if isinstance(value, str):
        values = [value] * blocks
    elif isinstance(value, list | tuple):
        values = [str(v) for v in value]
    else:
        raise ValueError(f"{key}={value!r}: give one of {list(choices)}, or a list of one "
                         "per block")
    if len(values) != blocks:
        raise ValueError(f"{key} has {len(values)} entries for {blocks} blocks: give one "
                         "value, or one per block")
    for v in values:
        if v not in choices:
            raise ValueError(f"unknown {key} {v!r}; choose one of {list(choices)}")
    return values


def _validate(cfg: ModelConfig) -> list[bool]:
    if not cfg.blocks:
        raise ValueError("model.blocks is empty: give at least one [pool, filters, kernel]")
    for i, spec in enumerate(cfg.blocks):
        if len(spec) != 3 or any(int(v) < 1 for v in spec):
            raise ValueError(
                f"model.blocks[{i}] = {list(spec)}: expected [pool, filters, kernel] "
                "with positive integers"
            )
        if int(spec[2]) % 2 == 0:
            raise ValueError(f"model.blocks[{i}]: kernel {spec[2]} must be odd ('same' padding)")
    flags = list(cfg.contextual) if cfg.contextual is not None else [False] * len(cfg.blocks)
    if len(flags) != len(cfg.blocks):
        raise ValueError(f"model.contextual has {len(flags)} flags for {len(cfg.blocks)} blocks")
    for i in cfg.score_blocks or []:
        if not 0 <= i < len(cfg.blocks):
            raise ValueError(
                f"model.score_blocks: block {i} does not exist "
                f"(the model has {len(cfg.blocks)} blocks)"
            )
    return [bool(f) for f in flags]


class ContextualNet(nn.Module):
    """Blocks in sequence; class scores are goodness summed over ``score_blocks``."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        flags = _validate(cfg)
        per_block_goodness = not isinstance(cfg.goodness, str)
        goodness = per_block(cfg.goodness, len(cfg.blocks), "model.goodness", GOODNESS)
        self.cfg = cfg
        blocks, channels, size = [], cfg.in_channels, cfg.image_size
        for i, ((pool, filters, kernel), contextual) in enumerate(zip(cfg.blocks, flags,
                                                                       strict=True)):
            context_in_input = any(flags[:i])  # an earlier conv received the context
            block = ContextualConvBlock(
                channels,
                size,
                int(pool),
                int(filters),
                int(kernel),
                cfg.num_classes,
                injection=cfg.injection if contextual else "none",
                goodness=(goodness[i] if per_block_goodness or contextual or context_in_input
                          else "linear"),
                norm=cfg.norm,
                max_grid=cfg.max_grid,
                context_in_input=context_in_input,
            )
            blocks.append(block)
            channels, size = int(filters), block.out_size
        self.blocks = nn.ModuleList(blocks)
        self.score_blocks = list(cfg.score_blocks) if cfg.score_blocks else list(range(len(blocks)))

    @property
    def num_classes(self) -> int:
        return self.cfg.num_classes

    @property
    def first_contextual_block(self) -> int:
        """Index of the first block whose conv receives the context (len if none): it and
        every later block have outputs that depend on the context."""
        return next((i for i, b in enumerate(self.blocks) if b.is_contextual), len(self.blocks))

    @property
    def supports_onepass(self) -> bool:
        """All K scores from one pass: no block output depends on the context."""
        return self.first_contextual_block == len(self.blocks) and all(
            b.has_linear_goodness for b in self.blocks
        )

    def features(
        self, x: torch.Tensor, upto: int, context: torch.Tensor | None = None, start: int = 0
    ) -> torch.Tensor:
        """Output of blocks[start:upto] for the input ``x`` of block ``start`` (the input of
        block ``upto``); ``context`` (B, K) is needed from the first contextual block on."""
        for block in self.blocks[start:upto]:
            x = block(x, context)
        return x

    def features_under_contexts(
        self, x: torch.Tensor, upto: int, contexts: torch.Tensor, start: int = 0
    ) -> torch.Tensor:
        """``features`` of one input ``x`` (B, ...) of block ``start`` under each row of
        ``contexts`` (R*B, K), context-major: equal to ``features(x.repeat(R), upto,
        contexts, start)``, with block ``start``'s conv of ``x`` computed once."""
        if start >= upto:
            return x.repeat(len(contexts) // len(x), *([1] * (x.dim() - 1)))
        h = self.blocks[start].under_contexts(x, contexts)
        return self.features(h, upto, contexts, start=start + 1)


def build_model(cfg: ModelConfig) -> ContextualNet:
    """The network a config describes."""
    return ContextualNet(cfg)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
