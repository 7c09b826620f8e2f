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


class ConfigValueError(ValueError):
    """A config value outside its allowed range."""


def _at_least(key: str, value: object, low: int, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        null = " or null" if optional else ""
        raise ConfigValueError(f"{key}={value}: must be an integer >= {low}{null}")


def _choice(key: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigValueError(f"unknown {key} {value!r}; choose one of {list(choices)}")


def validate_config(cfg: TrainAppConfig) -> None:
    """Refuse values outside their range before anything in the run directory changes."""
    from ctxconv.train.trainer import METHODS, PARALLEL, SCHEDULES

    d, t = cfg.data, cfg.trainer
    _at_least("data.batch_size", d.batch_size, 1)
    _at_least("data.max_train_samples", d.max_train_samples, 1, optional=True)
    _at_least("data.max_test_samples", d.max_test_samples, 1, optional=True)
    _at_least("data.negatives", d.negatives, 1)
    if d.num_workers:
        raise ConfigValueError(f"data.num_workers={d.num_workers} has no effect on ctxconv-train "
                               "(the training tensors stay in memory and batches are indexed, "
                               "no DataLoader workers): drop it; load_and_split_data alone "
                               "uses it")
    _at_least("trainer.epochs", t.epochs, 1)
    _at_least("trainer.eval_batch_size", t.eval_batch_size, 1)
    if not 0.0 < d.val_ratio < 1.0:
        raise ConfigValueError(f"data.val_ratio={d.val_ratio}: must lie strictly between 0 and "
                               "1 (the share of the training images held out for validation)")
    if not 0.0 <= d.test_ratio < 1.0 or d.val_ratio + d.test_ratio >= 1.0:
        raise ConfigValueError(f"data.test_ratio={d.test_ratio}: must lie in [0, 1) with "
                               f"data.val_ratio + data.test_ratio < 1 (val_ratio {d.val_ratio})")
    if not t.lr > 0:
        raise ConfigValueError(f"trainer.lr={t.lr}: must be > 0")
    if not t.dist_timeout_s > 0:
        raise ConfigValueError(f"trainer.dist_timeout_s={t.dist_timeout_s}: must be > 0 "
                               "(seconds a rank waits for the others)")
    _choice("trainer.optimizer", t.optimizer, ("adam", "sgd"))
    _choice("trainer.lr_schedule", t.lr_schedule, ("cosine", "constant"))
    if t.schedule in ("cosine", "constant"):
        raise ConfigValueError(f"trainer.schedule={t.schedule} is the learning-rate schedule's "
                               f"old key: set trainer.lr_schedule={t.schedule} (trainer.schedule "
                               f"chooses how blocks train: {' or '.join(SCHEDULES)})")
    _choice("trainer.schedule", t.schedule, SCHEDULES)
    if not 0.0 <= t.label_smoothing < 1.0:
        raise ConfigValueError(f"trainer.label_smoothing={t.label_smoothing}: must lie in "
                               "[0, 1) (the share of the target spread over the other classes)")
    _choice("trainer.method", t.method, METHODS)
    _choice("trainer.cache_prefix", t.cache_prefix, ("auto", "on", "off"))
    objectives = [t.objective] if isinstance(t.objective, str) else list(t.objective)
    if t.label_smoothing and any(o != "softmax" for o in objectives):
        raise ConfigValueError(f"trainer.label_smoothing={t.label_smoothing} smooths the softmax "
                               f"objective's targets; trainer.objective is {t.objective}: set "
                               "trainer.objective=softmax or label_smoothing=0")
    _choice("trainer.parallel", t.parallel, PARALLEL)
    if t.schedule == "simultaneous":
        _check_simultaneous(cfg)
    elif t.parallel == "block":
        raise ConfigValueError("trainer.parallel=block trains every stage of blocks at once: "
                               "set trainer.schedule=simultaneous (or trainer.parallel=data)")


def _check_simultaneous(cfg: TrainAppConfig) -> None:
    """``trainer.schedule=simultaneous``: blockwise, context-free outputs, nothing frozen."""
    t, m = cfg.trainer, cfg.model
    if t.method != "blockwise":
        raise ConfigValueError(f"trainer.schedule=simultaneous is a schedule of blockwise "
                               f"training; trainer.method={t.method} trains end to end: drop "
                               "one of them")
    if any(m.contextual or []):
        raise ConfigValueError("trainer.schedule=simultaneous trains blocks whose output does "
                               f"not depend on the context; model.contextual={list(m.contextual)}"
                               ": set it to all false, or use trainer.schedule=sequential")
    if t.cache_prefix == "on":
        raise ConfigValueError("trainer.cache_prefix=on caches a frozen prefix; "
                               "trainer.schedule=simultaneous trains every block at once and "
                               "has none: use cache_prefix=auto")
