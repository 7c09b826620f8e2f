"""Shape of one trainable block, and which of its parameters a training run updates.

Everything the memory accounting and the numpy trainer need to know about a block
without its weights: input map, pool, kernel, filters, head grid, context injection.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Parameter groups a training run may update (the rest stay int8 in flash).
UPDATE_MODES: dict[str, tuple[str, ...]] = {
    "all": ("conv_weight", "conv_bias", "context_weight", "head_weight", "head_bias"),
    "head": ("head_weight", "head_bias"),  # the goodness head only (TinyTL-style last layer)
    "bias": ("conv_bias", "context_weight", "head_bias"),  # biases (W_c . c is a bias too)
}


@dataclass(frozen=True)
class BlockGeometry:
    """MaxPool(pool) -> conv kernel x kernel 'same' (+ W_c . c) -> ReLU -> avg-pool grid -> FC."""

    in_size: int  # input feature map height = width (before the pool)
    in_channels: int
    pool: int  # 1 = no pool
    kernel: int
    filters: int
    num_classes: int
    head_grid: int
    contextual: bool = False

    def __post_init__(self) -> None:
        if self.kernel % 2 == 0:
            raise ValueError(f"kernel {self.kernel} must be odd ('same' padding)")
        if self.in_size % self.pool:
            raise ValueError(f"pool {self.pool} does not divide input size {self.in_size}")
        if self.out_size % self.head_grid:
            raise ValueError(f"head grid {self.head_grid} does not divide {self.out_size}")

    @property
    def out_size(self) -> int:
        return self.in_size // self.pool

    @property
    def cell(self) -> int:
        """Average-pool cell of the goodness grid."""
        return self.out_size // self.head_grid

    @property
    def n_flat(self) -> int:
        """Head input length: g * g * filters (NHWC flatten order)."""
        return self.head_grid * self.head_grid * self.filters

    @property
    def taps(self) -> int:
        """im2col row length: kernel * kernel * in_channels."""
        return self.kernel * self.kernel * self.in_channels

    @property
    def pixels(self) -> int:
        """Conv output positions per image."""
        return self.out_size * self.out_size

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Parameter name -> shape (conv OHWI, head (K, g*g*O) in NHWC flatten order)."""
        o, k, i = self.filters, self.kernel, self.in_channels
        shapes = {"conv_weight": (o, k, k, i), "conv_bias": (o,)}
        if self.contextual:
            shapes["context_weight"] = (o, self.num_classes)
        shapes["head_weight"] = (self.num_classes, self.n_flat)
        shapes["head_bias"] = (self.num_classes,)
        return shapes

    def param_count(self, names: tuple[str, ...] | None = None) -> int:
        shapes = self.param_shapes()
        total = 0
        for name, shape in shapes.items():
            if names is None or name in names:
                n = 1
                for d in shape:
                    n *= d
                total += n
        return total


def trainable_names(geom: BlockGeometry, update: str) -> tuple[str, ...]:
    """The parameters ``update`` trains in this block (ValueError for unknown modes)."""
    if update not in UPDATE_MODES:
        raise ValueError(f"unknown update mode {update!r}; choose one of {sorted(UPDATE_MODES)}")
    shapes = geom.param_shapes()
    return tuple(n for n in UPDATE_MODES[update] if n in shapes)
