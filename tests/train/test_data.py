"""Datasets, splits and clear errors for data that is missing."""

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from ctxconv.train.data import (
    DataConfig,
    DatasetUnavailableError,
    load_and_split_data,
    load_datasets,
)


def test_digits_split_is_seeded_and_disjoint():
    cfg = DataConfig(dataset="digits", val_ratio=0.1, seed=3)
    train, val, test, info = load_datasets(cfg)
    assert (info.train_size, info.val_size, info.test_size) == (len(train), len(val), len(test))
    assert len(train) + len(val) + len(test) == 1797
    assert info.num_classes == 10 and info.image_size == 8 and info.in_channels == 1
    again = load_datasets(cfg)[0]
    assert torch.equal(train.tensors[0], again.tensors[0])
    other = load_datasets(DataConfig(dataset="digits", seed=4))[0]
    assert not torch.equal(train.tensors[0], other.tensors[0])
    # normalised with statistics of the training split, which are recorded
    assert abs(float(train.tensors[0].mean())) < 1e-4
    assert len(info.mean) == 1 and info.std[0] > 0


def test_loaders_batch_size():
    train_loader, val_loader, test_loader = load_and_split_data(DataConfig(batch_size=32))
    x, y = next(iter(train_loader))
    assert x.shape == (32, 1, 8, 8) and y.dtype == torch.int64


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_reads_idx_files(tmp_path):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 50), ("t10k", 20)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, (n,)))
    train, val, test, info = load_datasets(
        DataConfig(dataset="fashion_mnist", data_dir=str(tmp_path), val_ratio=0.2)
    )
    assert (len(train), len(val), len(test)) == (40, 10, 20)
    assert train.tensors[0].shape[1:] == (1, 28, 28)
    assert info.class_names[0] == "T-shirt/top" and str(tmp_path) in info.source


def test_unknown_dataset_is_rejected():
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'.*digits"):
        load_datasets(DataConfig(dataset="imagenet"))


def test_missing_dataset_offline_says_how_to_get_it(tmp_path):
    with pytest.raises(DatasetUnavailableError, match="could not be downloaded.*digits"):
        load_datasets(DataConfig(dataset="cifar10", data_dir=str(tmp_path), download=False))


def test_num_classes_mismatch_is_rejected():
    with pytest.raises(ValueError, match="num_classes=5 does not match dataset 'digits'"):
        load_datasets(DataConfig(dataset="digits", num_classes=5))


def test_bad_val_ratio():
    with pytest.raises(ValueError, match="val_ratio"):
        load_datasets(DataConfig(val_ratio=1.5))


REAL_FMNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


@pytest.mark.skipif(not REAL_FMNIST.exists(), reason="apt-get install -y dataset-fashion-mnist")
def test_real_fashion_mnist_subset_learns(tmp_path):
    """Debian's Fashion-MNIST files, 2000 training images, one epoch per block."""
    from ctxconv.train.config import TrainAppConfig
    from ctxconv.train.data_gen import DataGenConfig
    from ctxconv.train.model import ModelConfig
    from ctxconv.train.run import train_run
    from ctxconv.train.trainer import TrainerConfig

    cfg = TrainAppConfig()
    cfg.data = DataGenConfig(dataset="fashion_mnist", batch_size=128, max_train_samples=2000,
                             max_test_samples=2000)
    cfg.model = ModelConfig(blocks=[[2, 8, 3], [2, 16, 3]], max_grid=7)
    cfg.trainer = TrainerConfig(epochs=2, lr=5e-3, progress=False)
    summary = train_run(cfg, tmp_path)
    assert summary["train_size"] == 2000 and summary["test_size"] == 2000
    assert summary["test_accuracy"]["onepass"] > 0.7, summary["test_accuracy"]


@pytest.mark.slow
def test_fashion_mnist_benchmark_model_reaches_target(tmp_path):
    """The benchmark configuration (about 20 minutes on 2 cores): >= 92.5 % test accuracy."""
    import json
    import subprocess
    import sys

    subprocess.run([sys.executable, "-m", "ctxconv.train.cli", "experiment=fashion_mnist",
                    f"hydra.run.dir={tmp_path}", "trainer.progress=false"], check=True,
                   timeout=3600)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["test_accuracy"]["onepass"] >= 0.925, summary["test_accuracy"]


def test_num_workers_is_refused_where_it_does_nothing():
    from ctxconv.train.config import ConfigValueError, TrainAppConfig, validate_config

    cfg = TrainAppConfig()
    cfg.data.num_workers = 2
    with pytest.raises(ConfigValueError, match="has no effect on ctxconv-train"):
        validate_config(cfg)
