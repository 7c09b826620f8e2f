"""Structured configs of ``ctxconv-train``, registered with Hydra's ConfigStore.

Every YAML file under ``ctxconv/configs`` and every command-line override is merged
into these dataclasses, so a misspelt key or a wrong type is an error, not a silent no-op.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore

from ctxconv.train.data_gen import DataGenConfig
from ctxconv.train.model import ModelConfig
from ctxconv.train.trainer import TrainerConfig


@dataclass
class WandbConfig:
    """Weights & Biases logging; off unless enabled (offline mode needs no network)."""

    enabled: bool = False
    project: str = "ctxconv"
    mode: str = "offline"  # offline | online | disabled
    entity: str | None = None


@dataclass
class TrainAppConfig:
    data: DataGenConfig = field(default_factory=DataGenConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    seed: int = 0
    resume: bool = False  # continue the run in hydra.run.dir from its last completed epoch
    overwrite: bool = False  # start afresh even if hydra.run.dir already holds a run
    threads: int | None = None  # torch intra-op threads; None = torch's default
    evaluate_test: bool = True  # false: validation only (for choosing settings on it)


def register_configs() -> None:
    ConfigStore.instance().store(name="train_schema", node=TrainAppConfig)
