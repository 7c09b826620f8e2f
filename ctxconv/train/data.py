"""Datasets as in-memory tensors, split into seeded train/validation/test loaders.

``digits`` (scikit-learn's 8x8 digits) ships with scikit-learn and is the embedded
default. ``fashion_mnist`` reads the IDX files of Debian's ``dataset-fashion-mnist``
when present, else torchvision's download. ``mnist``, ``cifar10`` and ``cifar100`` come
from torchvision. Offline and missing: a ``DatasetUnavailableError`` that says how to
get the data.
"""

from __future__ import annotations

import gzip
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

DATASETS = ("digits", "fashion_mnist", "mnist", "cifar10", "cifar100")
NUM_CLASSES = {"digits": 10, "fashion_mnist": 10, "mnist": 10, "cifar10": 10, "cifar100": 100}
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
SYSTEM_FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)


class DatasetUnavailableError(RuntimeError):
    """The dataset is neither on disk nor downloadable."""


@dataclass
class DataConfig:
    """Which data, how it is split and batched."""

    dataset: str = "digits"
    num_classes: int | None = None  # None: taken from the dataset
    batch_size: int = 64
    val_ratio: float = 0.1
    test_ratio: float = 0.2  # only for datasets without an official test split (digits)
    seed: int = 0
    data_dir: str | None = None  # torchvision download root; default ~/.cache/ctxconv
    download: bool = True
    max_train_samples: int | None = None  # a seeded subset, for quick runs
    max_test_samples: int | None = None
    num_workers: int = 0  # load_and_split_data's DataLoader workers (not ctxconv-train's)


@dataclass
class DatasetInfo:
    """What a run records about its data: name, geometry, classes, normalisation."""

    name: str
    num_classes: int
    in_channels: int
    image_size: int
    class_names: list[str]
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    pixel_scale: float = 1.0 / 255.0  # raw pixel * pixel_scale = the [0, 1] image normalised
    train_size: int = 0
    val_size: int = 0
    test_size: int = 0
    source: str = ""


def set_seed(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA) for reproducible runs."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _find_idx(directory: Path, stem: str) -> Path | None:
    for name in (f"{stem}.gz", stem):
        if (directory / name).exists():
            return directory / name
    return None


def _fashion_mnist_from_idx(directory: Path) -> tuple[np.ndarray, ...] | None:
    stems = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]  # fmt: skip
    paths = [_find_idx(directory, s) for s in stems]
    if any(p is None for p in paths):
        return None
    return tuple(_read_idx(p) for p in paths)  # type: ignore[arg-type]


def _download_hint(name: str, root: Path) -> str:
    hint = f"dataset {name!r} is not in {root} and could not be downloaded (offline?)."
    if name == "fashion_mnist":
        hint += (
            " Install Debian's package (`apt-get install -y dataset-fashion-mnist`), or put"
            " the four IDX files in data_dir, or run once with network access."
        )
    else:
        hint += f" Run once with network access or copy torchvision's {name} files into data_dir."
    return hint + " The embedded dataset `digits` needs no download."


def _torchvision_arrays(name: str, root: Path, download: bool) -> tuple[np.ndarray, ...]:
    import torchvision.datasets as tvd

    cls = {"mnist": tvd.MNIST, "fashion_mnist": tvd.FashionMNIST,
           "cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100}[name]  # fmt: skip
    try:
        train = cls(str(root), train=True, download=download)
        test = cls(str(root), train=False, download=download)
    except Exception as exc:  # network errors come in many types
        raise DatasetUnavailableError(_download_hint(name, root)) from exc
    arrays = []
    for split in (train, test):
        images = np.asarray(split.data)
        labels = np.asarray(split.targets)
        arrays += [images, labels]
    return tuple(arrays)


def _load_arrays(cfg: DataConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    """Raw arrays (N, H, W[, C]) uint8/float and int labels, plus a source description."""
    name = cfg.dataset
    if name == "digits":
        from sklearn.datasets import load_digits

        bunch = load_digits()
        images = (bunch.images / 16.0).astype(np.float32)  # (N, 8, 8) in [0, 1]
        labels = bunch.target.astype(np.int64)
        order = np.random.default_rng(cfg.seed).permutation(len(labels))
        n_test = int(round(len(labels) * cfg.test_ratio))
        test, train = order[:n_test], order[n_test:]
        return images[train], labels[train], images[test], labels[test], "scikit-learn load_digits"
    root = Path(cfg.data_dir or os.path.expanduser("~/.cache/ctxconv")).expanduser()
    if name == "fashion_mnist":
        for directory in (root, root / "fashion-mnist", *map(Path, SYSTEM_FASHION_MNIST_DIRS)):
            found = _fashion_mnist_from_idx(directory)
            if found is not None:
                return (*found, f"IDX files in {directory}")  # type: ignore[return-value]
    arrays = _torchvision_arrays(name, root, cfg.download)
    return (*arrays, f"torchvision {name} in {root}")  # type: ignore[return-value]


def _to_nchw(images: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(np.array(images))  # a writable copy
    if not x.dtype.is_floating_point:
        x = x.float() / 255.0
    if x.dim() == 3:
        x = x.unsqueeze(1)  # (N, 1, H, W)
    elif x.shape[-1] in (1, 3):
        x = x.permute(0, 3, 1, 2)  # NHWC -> NCHW
    return x.contiguous()


def load_datasets(
    cfg: DataConfig,
) -> tuple[TensorDataset, TensorDataset, TensorDataset, DatasetInfo]:
    """Normalised train/val/test tensor datasets and what the run should record."""
    if cfg.dataset not in DATASETS:
        raise ValueError(f"unknown dataset {cfg.dataset!r}; choose one of {list(DATASETS)}")
    if not 0.0 <= cfg.val_ratio < 1.0:
        raise ValueError(f"val_ratio must be in [0, 1), got {cfg.val_ratio}")
    x_tr, y_tr, x_te, y_te, source = _load_arrays(cfg)
    x_train, x_test = _to_nchw(x_tr), _to_nchw(x_te)
    y_train, y_test = (
        torch.from_numpy(np.array(y_tr)).long(),
        torch.from_numpy(np.array(y_te)).long(),
    )
    num_classes = NUM_CLASSES[cfg.dataset]
    if cfg.num_classes is not None and cfg.num_classes != num_classes:
        raise ValueError(
            f"num_classes={cfg.num_classes} does not match dataset {cfg.dataset!r}, "
            f"which has {num_classes} classes; leave num_classes unset"
        )
    gen = torch.Generator().manual_seed(cfg.seed)
    order = torch.randperm(len(y_train), generator=gen)
    n_val = int(round(len(order) * cfg.val_ratio))
    val_idx, train_idx = order[:n_val], order[n_val:]
    if cfg.max_train_samples is not None:
        train_idx = train_idx[: cfg.max_train_samples]
    if cfg.max_test_samples is not None:
        x_test, y_test = x_test[: cfg.max_test_samples], y_test[: cfg.max_test_samples]
    mean = x_train[train_idx].mean(dim=(0, 2, 3))  # (C,)
    std = x_train[train_idx].std(dim=(0, 2, 3)).clamp_min(1e-6)

    def norm(x: torch.Tensor) -> torch.Tensor:
        return (x - mean[None, :, None, None]) / std[None, :, None, None]

    train = TensorDataset(norm(x_train[train_idx]), y_train[train_idx])
    val = TensorDataset(norm(x_train[val_idx]), y_train[val_idx])
    test = TensorDataset(norm(x_test), y_test)
    class_names = (
        FASHION_MNIST_CLASSES
        if cfg.dataset == "fashion_mnist"
        else [str(i) for i in range(num_classes)]
    )
    info = DatasetInfo(
        name=cfg.dataset, num_classes=num_classes, in_channels=x_train.shape[1],
        image_size=x_train.shape[-1], class_names=list(class_names),
        mean=mean.tolist(), std=std.tolist(),
        pixel_scale=1.0 / 16.0 if cfg.dataset == "digits" else 1.0 / 255.0,
        train_size=len(train), val_size=len(val),
        test_size=len(test), source=source,
    )  # fmt: skip
    return train, val, test, info


def make_loader(
    dataset: TensorDataset, batch_size: int, shuffle: bool, seed: int = 0, num_workers: int = 0
) -> DataLoader:
    """A DataLoader with a seeded shuffle order."""
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=gen,
        num_workers=num_workers,
        drop_last=False,
    )


def load_and_split_data(cfg: DataConfig) -> tuple[DataLoader, DataLoader, DataLoader]:
    """(train_loader, val_loader, test_loader); the split is seeded by ``cfg.seed``."""
    train, val, test, _ = load_datasets(cfg)
    return (
        make_loader(train, cfg.batch_size, True, cfg.seed, cfg.num_workers),
        make_loader(val, cfg.batch_size, False, num_workers=cfg.num_workers),
        make_loader(test, cfg.batch_size, False, num_workers=cfg.num_workers),
    )
