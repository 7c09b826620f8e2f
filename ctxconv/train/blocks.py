"""Building blocks of a contextual network.

A block is ``PoolConv`` (optional max-pool, normalisation, a ``ContextualConv2d`` and a
ReLU) followed by a goodness: how well the block's output agrees with a one-hot context.

- ``ContextualConv2d``: conv k x k (+ batch norm) whose pre-activation output receives a
  learned projection of the one-hot context as a per-channel bias and/or FiLM scale
  (the paper's im2col formulation is the bias form). Without injection it is a plain conv.
- ``LinearGoodness``: goodness linear in the one-hot context, ``g(h, c) = c . (W z + b)``
  with ``z`` the block output average-pooled to a small grid. It is a FiLM scale of the
  pooled output by ``W c`` summed up, and it gives all K class scores from one pass.
- ``EnergyGoodness``: the seed's goodness, the mean squared activation of a block whose
  output depends on the context (its conv or an earlier block's receives it; scores need
  one pass per candidate context).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

INJECTIONS = ("none", "bias", "film", "bias+film")
NORMS = ("batch", "l2", "none")
GOODNESS = ("linear", "energy")


class L2Normalize(nn.Module):
    """Per-sample L2 normalisation over (C, H, W), as in forward-forward networks."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        norm = x.flatten(1).norm(dim=1).clamp_min(1e-6)
        return x / norm[:, None, None, None] * (x[0].numel() ** 0.5)


class ContextualConv2d(nn.Module):
    """Conv k x k, optional batch norm, then context injection before the activation."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        num_classes: int,
        injection: str = "bias",
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        if injection not in INJECTIONS:
            raise ValueError(f"unknown context injection {injection!r}; choose one of {INJECTIONS}")
        self.injection = injection
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=not batch_norm
        )
        self.bn = nn.BatchNorm2d(out_channels) if batch_norm else nn.Identity()
        self.context_bias = (
            nn.Linear(num_classes, out_channels, bias=False) if "bias" in injection else None
        )
        self.context_scale = (
            nn.Linear(num_classes, out_channels, bias=False) if "film" in injection else None
        )
        if self.context_scale is not None:
            nn.init.zeros_(self.context_scale.weight)  # start as the identity modulation

    @property
    def is_contextual(self) -> bool:
        return self.injection != "none"

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return self.inject(self.context_free(x), context)

    def context_free(self, x: torch.Tensor) -> torch.Tensor:
        """Conv and batch norm, (B, n, H, W): what every context shares."""
        return self.bn(self.conv(x))

    def inject(self, y: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """The context injection into ``context_free``'s output (a context row per row of
        ``y``): the only per-context part of the conv."""
        if not self.is_contextual:
            return y
        if context is None:
            raise ValueError("this ContextualConv2d injects context: pass a (B, K) context")
        if self.context_scale is not None:
            y = y * (1.0 + self.context_scale(context))[:, :, None, None]
        if self.context_bias is not None:
            y = y + self.context_bias(context)[:, :, None, None]
        return y


class PoolConv(nn.Module):
    """Optional MaxPool(m) -> normalisation -> ContextualConv2d -> ReLU."""

    def __init__(
        self,
        in_channels: int,
        filters: int,
        kernel_size: int,
        pool: int,
        num_classes: int,
        injection: str = "none",
        norm: str = "batch",
    ) -> None:
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; choose one of {NORMS}")
        self.pool = nn.MaxPool2d(pool) if pool > 1 else nn.Identity()
        self.pre_norm = L2Normalize() if norm == "l2" else nn.Identity()
        self.conv = ContextualConv2d(
            in_channels, filters, kernel_size, num_classes, injection, batch_norm=norm == "batch"
        )

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return self.per_context(self.shared(x), context)

    def shared(self, x: torch.Tensor) -> torch.Tensor:
        """The context-free part: pool, normalisation, conv and batch norm of the input."""
        return self.conv.context_free(self.pre_norm(self.pool(x)))

    def per_context(self, y: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """The rest, under ``context``: the injection and the ReLU."""
        return F.relu(self.conv.inject(y, context))


def grid_size(feature_size: int, max_grid: int) -> int:
    """Largest g <= max_grid that divides the feature map, so pooling cells are equal."""
    return max(g for g in range(1, max_grid + 1) if feature_size % g == 0)


class LinearGoodness(nn.Module):
    """Goodness linear in the context: class scores ``W z + b`` on a pooled grid."""

    def __init__(self, channels: int, feature_size: int, num_classes: int, max_grid: int) -> None:
        super().__init__()
        self.grid = grid_size(feature_size, max_grid)
        self.cell = feature_size // self.grid
        self.linear = nn.Linear(channels * self.grid * self.grid, num_classes)

    def scores(self, h: torch.Tensor) -> torch.Tensor:  # (B, n, H, W) -> (B, K)
        return self.linear(self.pooled(h).flatten(1))

    def pooled(self, h: torch.Tensor) -> torch.Tensor:  # (B, n, H, W) -> (B, n, g, g)
        """Average over each c x c cell. A mean over a (B, g, c, g, c, n) view of channels-last
        maps: its backward is a broadcast, where avg_pool2d's converts memory formats."""
        if self.cell == 1:
            return h
        b, n, _, _ = h.shape
        g, c = self.grid, self.cell
        if h.is_contiguous(memory_format=torch.channels_last):
            z = h.permute(0, 2, 3, 1).reshape(b * g * c * g, c, n).sum(1)  # columns of a cell
            z = z.view(b * g, c, g * n).sum(1)  # then its rows: (B*g, g*n)
            return z.view(b, g, g, n).permute(0, 3, 1, 2) * (1.0 / (c * c))
        return F.avg_pool2d(h, c)

    def forward(self, h: torch.Tensor, context: torch.Tensor) -> torch.Tensor:  # -> (B,)
        return (self.scores(h) * context).sum(dim=1)


class EnergyGoodness(nn.Module):
    """The seed's goodness: mean squared activation (context enters through the conv)."""

    def forward(self, h: torch.Tensor, context: torch.Tensor) -> torch.Tensor:  # -> (B,)
        return h.pow(2).flatten(1).mean(dim=1)


class ContextualConvBlock(nn.Module):
    """One trainable unit: PoolConv plus its goodness."""

    def __init__(
        self,
        in_channels: int,
        in_size: int,
        pool: int,
        filters: int,
        kernel_size: int,
        num_classes: int,
        injection: str = "none",
        goodness: str = "linear",
        norm: str = "batch",
        max_grid: int = 4,
        context_in_input: bool = False,
    ) -> None:
        super().__init__()
        if in_size % max(pool, 1):
            raise ValueError(f"pool {pool} does not divide the {in_size}x{in_size} feature map")
        self.out_size = in_size // max(pool, 1)
        self.num_classes = num_classes
        self.context_in_input = context_in_input  # an earlier block's conv receives the context
        self.body = PoolConv(in_channels, filters, kernel_size, pool, num_classes, injection, norm)
        if goodness == "linear":
            self.goodness: nn.Module = LinearGoodness(filters, self.out_size, num_classes, max_grid)
        elif goodness == "energy":
            if injection == "none" and not context_in_input:
                raise ValueError(
                    "energy goodness needs a block whose output depends on the context "
                    "(its conv or an earlier one receives it: set a contextual flag, or use "
                    "goodness=linear)"
                )
            self.goodness = EnergyGoodness()
        else:
            raise ValueError(f"unknown goodness {goodness!r}; choose one of {list(GOODNESS)}")

    @property
    def is_contextual(self) -> bool:
        """True when the block's conv receives the context."""
        return self.body.conv.is_contextual

    @property
    def depends_on_context(self) -> bool:
        """True when the block's output depends on the context (its conv or its input)."""
        return self.is_contextual or self.context_in_input

    @property
    def has_linear_goodness(self) -> bool:
        return isinstance(self.goodness, LinearGoodness)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return self.body(x, context)

    def under_contexts(self, x: torch.Tensor, contexts: torch.Tensor) -> torch.Tensor:
        """Output for the input ``x`` (B, ...) under ``contexts`` (R*B, K), context-major
        (rows r*B..r*B+B-1 share context row block r): equal to ``self(x.repeat(R), contexts)``
        with the conv of ``x`` computed once (the im2col formulation: only the per-context
        bias or scale, the activation and what follows depend on the context). In training
        mode batch norm takes its statistics over the B images, not their R copies: the
        same mean and biased variance (the running variance's n/(n-1) differs by less than
        1e-3 of itself)."""
        y = self.body.shared(x)
        repeats = len(contexts) // len(x)
        return self.body.per_context(y.repeat(repeats, *([1] * (y.dim() - 1))), contexts)

    def all_class_goodness(self, x: torch.Tensor) -> torch.Tensor:
        """Goodness under every candidate context, (B, K), one body pass per context when needed.

        ``x`` is the block's input, the same for every context: for a block whose input
        depends on the context, run the prefix per context instead (``inference``)."""
        if not self.is_contextual and self.has_linear_goodness:
            return self.goodness.scores(self.body(x))
        batch, k = x.shape[0], self.num_classes
        eye = torch.eye(k, device=x.device, dtype=x.dtype)
        contexts = eye.repeat_interleave(batch, dim=0)  # (K*B, K), context-major
        return self.goodness(self.under_contexts(x, contexts), contexts).view(k, batch).T
