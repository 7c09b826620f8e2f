"""Tiny models trained on digits in seconds, for tests."""

from pathlib import Path


def train_tiny(path: Path, epochs: int = 3, **model_kw) -> Path:
    """A two-block digits model (seconds on 2 cores); returns its run directory."""
    from ctxconv.train.config import TrainAppConfig
    from ctxconv.train.data_gen import DataGenConfig
    from ctxconv.train.model import ModelConfig
    from ctxconv.train.run import train_run
    from ctxconv.train.trainer import TrainerConfig

    cfg = TrainAppConfig()
    cfg.data = DataGenConfig(dataset="digits", max_train_samples=600)
    cfg.model = ModelConfig(**{"blocks": [[1, 8, 3], [2, 16, 3]], **model_kw})
    cfg.trainer = TrainerConfig(epochs=epochs, lr=5e-3, progress=False)
    train_run(cfg, path)
    return path


def small_app(blocks=None, max_train_samples: int = 300, **trainer_kw):
    """Digits, a few hundred images, two small blocks, two epochs: a second or two."""
    from ctxconv.train.config import TrainAppConfig
    from ctxconv.train.data_gen import DataGenConfig
    from ctxconv.train.model import ModelConfig
    from ctxconv.train.trainer import TrainerConfig

    cfg = TrainAppConfig()
    cfg.data = DataGenConfig(dataset="digits", batch_size=64, max_train_samples=max_train_samples)
    cfg.model = ModelConfig(blocks=blocks or [[1, 8, 3], [2, 12, 3]])
    cfg.trainer = TrainerConfig(**{"epochs": 2, "lr": 5e-3, "progress": False, **trainer_kw})
    return cfg
