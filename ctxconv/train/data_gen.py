"""Contextual data generation: positive and negative (image, one-hot label) pairs.

For a batch of B images with labels, the positive context is the one-hot true label and
the negative context is the one-hot of a label drawn uniformly from the K-1 wrong ones.
Images are duplicated so the output is ``(2B, C, H, W)`` images and ``(2B, K)``
contexts, positives first. ``negatives = n > 1`` pairs each image with n distinct wrong
labels instead: ``((1 + n) B, ...)``, the positives, then the first negative of every
image, then the second, and so on (n = K - 1: every wrong label once).
Run ``python -m ctxconv.train.data_gen`` to log the shapes.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import torch

from ctxconv.train.data import DataConfig

log = logging.getLogger(__name__)

DATA_GEN_TYPES = ("contextual",)


@dataclass
class DataGenConfig(DataConfig):
    """The data configuration plus the choice of generation method."""

    data_gen_type: str = "contextual"
    negatives: int = 1  # wrong-label contexts per image (1: the seed's pairs; K-1: all)


def _check_labels(labels: torch.Tensor, num_classes: int) -> None:
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 to draw a wrong label, got {num_classes}")
    if labels.dim() != 1:
        raise ValueError(f"labels must have shape (B,), got {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"labels must lie in [0, {num_classes - 1}], got values in "
            f"[{int(labels.min())}, {int(labels.max())}]"
        )


def generate_wrong_labels(
    true_labels: torch.Tensor, num_classes: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Draw, for each label, a wrong label uniformly from the other K-1 classes.

    Drawing an offset in [1, K-1] and adding it modulo K never returns the true label
    and gives each wrong class probability 1/(K-1).
    """
    _check_labels(true_labels, num_classes)
    offsets = torch.randint(
        1, num_classes, true_labels.shape, device=true_labels.device, generator=generator
    )  # (B,)
    return (true_labels + offsets) % num_classes


def generate_distinct_wrong_labels(
    true_labels: torch.Tensor,
    num_classes: int,
    negatives: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """(n, B) wrong labels, distinct per image: n offsets drawn without replacement from
    [1, K-1] and added modulo K. Row j is every image's j-th negative."""
    _check_labels(true_labels, num_classes)
    if not 1 <= negatives <= num_classes - 1:
        raise ValueError(f"negatives must lie in [1, {num_classes - 1}] for {num_classes} "
                         f"classes, got {negatives}")
    if negatives == 1:  # the seed's draw
        return generate_wrong_labels(true_labels, num_classes, generator)[None]
    keys = torch.rand((true_labels.shape[0], num_classes - 1), generator=generator)
    offsets = keys.argsort(dim=1)[:, :negatives].to(true_labels.device) + 1  # (B, n)
    return ((true_labels[:, None] + offsets) % num_classes).T


def one_hot_encode(
    labels: torch.Tensor, num_classes: int, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """One-hot contexts (B, num_classes); float32 unless ``dtype`` says otherwise."""
    _check_labels(labels, num_classes)
    return torch.nn.functional.one_hot(labels.long(), num_classes).to(dtype or torch.float32)


def generate_contextual_data(
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    generator: torch.Generator | None = None,
    negatives: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Positive then negative pairs: images ((1+n)B, C, H, W), contexts ((1+n)B, K)."""
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"images and labels disagree on batch size: {images.shape[0]} vs {labels.shape[0]}"
        )
    ctx_dtype = images.dtype if images.dtype.is_floating_point else torch.float32
    positive_context = one_hot_encode(labels, num_classes, ctx_dtype)
    if negatives == 1:
        negative_labels = generate_wrong_labels(labels, num_classes, generator)
    else:
        negative_labels = generate_distinct_wrong_labels(
            labels, num_classes, negatives, generator).reshape(-1)  # (n*B,), negative-major
    negative_context = one_hot_encode(negative_labels, num_classes, ctx_dtype)
    augmented_images = images.repeat(1 + negatives, *([1] * (images.dim() - 1)))
    augmented_contexts = torch.cat([positive_context, negative_context], dim=0)
    return augmented_images, augmented_contexts  # ((1+n)B, C, H, W), ((1+n)B, K)


def generate_data(
    batch: tuple[torch.Tensor, torch.Tensor], cfg: DataGenConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Main entry point: dispatch on ``cfg.data_gen_type``."""
    images, labels = batch
    if cfg.data_gen_type == "contextual":
        if cfg.num_classes is None:
            raise ValueError("cfg.num_classes must be set to generate contextual data")
        return generate_contextual_data(images, labels, cfg.num_classes,
                                        negatives=getattr(cfg, "negatives", 1))
    raise ValueError(
        f"unknown data_gen_type {cfg.data_gen_type!r}; supported: {list(DATA_GEN_TYPES)}"
    )


def main() -> None:
    """Log original and augmented shapes and the config for the embedded default dataset."""
    from ctxconv.train.data import load_and_split_data

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = DataGenConfig(dataset="digits", num_classes=10)
    train_loader, _, _ = load_and_split_data(cfg)
    images, labels = next(iter(train_loader))
    aug_images, aug_contexts = generate_data((images, labels), cfg)
    log.info("config: %s", asdict(cfg))
    log.info("original images %s, labels %s", tuple(images.shape), tuple(labels.shape))
    log.info("augmented images %s, contexts %s", tuple(aug_images.shape), tuple(aug_contexts.shape))


if __name__ == "__main__":
    main()
