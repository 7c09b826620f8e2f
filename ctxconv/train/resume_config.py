"""``resume=true``: the run directory's stored config, and only contradicting overrides fail.

A run directory holds ``config.yaml`` (the resolved config it was trained with). On
resume that is the config; the command line may repeat settings, change the ones that
do not alter what is trained (``RUNTIME_KEYS``), and anything else that differs from
the stored value is an error naming both values. ``evaluate_test=true`` on a finished run
that was trained on validation only reads its test split once, without training; a run
trained on a GPU continues, or is evaluated, on another ``trainer.device``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ctxconv.train.overrides import (
    GROUPS,
    OverrideError,
    is_group_choice,
    is_hydra_key,
    parse_overrides,
)

CONFIG_NAME = "config.yaml"
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
RUNTIME_KEYS = ("resume", "overwrite", "threads", "trainer.progress", "trainer.eval_batch_size",
                "wandb", "evaluate_test", "trainer.device", "trainer.dist_timeout_s")  # fmt: skip
DERIVED_KEYS = ("data.num_classes",)  # filled in from the data set by the run


def _is_runtime(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in RUNTIME_KEYS + DERIVED_KEYS)


def _flatten(node: Any, prefix: str) -> list[tuple[str, Any]]:
    if isinstance(node, dict):
        out = []
        for k, v in node.items():
            out += _flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    return [(prefix, node)]


def group_values(group: str, option: str) -> list[tuple[str, Any]]:
    """(dotted key, value) that choosing ``group=option`` sets, experiments included."""
    path = CONFIG_DIR / group / f"{option}.yaml"
    if not path.is_file():
        return []
    text = path.read_text()
    node = OmegaConf.to_container(OmegaConf.load(path))
    out: list[tuple[str, Any]] = []
    for entry in node.pop("defaults", None) or []:
        if isinstance(entry, dict):
            for k, v in entry.items():
                sub = k.split()[-1].strip("/")
                if sub in GROUPS:
                    out += group_values(sub, str(v))
        elif isinstance(entry, str) and entry.startswith("/"):  # /experiment/contextual/x
            sub, _, name = entry.strip("/").partition("/")
            if sub in GROUPS:
                out += group_values(sub, name)
    package = "" if "@package _global_" in text else group
    return list(dict(out + _flatten(node, package)).items())  # a key once, its last value


def _value(cfg: DictConfig, key: str) -> Any:
    v = OmegaConf.select(cfg, key)
    return OmegaConf.to_container(v) if OmegaConf.is_config(v) else v


def upgrade_stored(stored: DictConfig) -> DictConfig:
    """A stored config in the current schema: runs written before ``trainer.lr_schedule``
    kept the learning-rate schedule in ``trainer.schedule`` (they trained sequentially)."""
    old = OmegaConf.select(stored, "trainer.schedule")
    if old in ("cosine", "constant"):
        stored.trainer.lr_schedule = old
        stored.trainer.schedule = "sequential"
    return stored


def resume_config(composed: DictConfig, run_dir: Path, overrides: list[str]) -> DictConfig:
    """The stored config of ``run_dir`` with the runtime overrides applied.

    ``composed``: what Hydra built from the defaults and ``overrides``. Raises
    OverrideError listing every override that contradicts the stored config. A run
    directory without ``config.yaml`` keeps ``composed``.
    """
    path = run_dir / CONFIG_NAME
    if not path.is_file():
        return composed
    stored = OmegaConf.merge(composed, upgrade_stored(OmegaConf.load(path)))  # typed by the schema
    stored.overwrite = composed.overwrite  # an instruction of the start that wrote it
    parsed = [o for o in parse_overrides(overrides) if not is_hydra_key(o.key_or_group)]
    explicit = {o.key_or_group for o in parsed if not is_group_choice(o)}
    wanted: list[tuple[str, Any, str]] = []  # (key, value, the override that sets it)
    for o in parsed:
        if is_group_choice(o):
            wanted += [(k, v, o.input_line) for k, v in group_values(o.key_or_group, o.value())
                       if k not in explicit]  # fmt: skip
        else:
            wanted.append((o.key_or_group, _value(composed, o.key_or_group), o.input_line))
    conflicts = []
    for key, value, line in wanted:
        if _is_runtime(key):
            OmegaConf.update(stored, key, value, merge=False)
        elif value != _value(stored, key):
            conflicts.append(f"'{line}' sets {key}={value!r} but the run has "
                             f"{key}={_value(stored, key)!r}")
    if conflicts:
        raise OverrideError(
            f"cannot resume {run_dir}: " + "; ".join(conflicts) + f" (its {CONFIG_NAME}). "
            "Drop these overrides to continue the run as it was configured, or train a new "
            "run in another hydra.run.dir"
        )
    return stored
