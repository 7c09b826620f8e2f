"""Checkpoints that carry their own model config, written atomically.

A checkpoint is a dict: ``format`` (version tag), ``model_config`` (a ModelConfig as a
dict), ``state_dict``, ``dataset`` (DatasetInfo as a dict: classes, normalisation),
``progress`` (last completed block and epoch) and, while training, the optimizer and
scheduler states. Export and simulation only need this file.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import torch

from ctxconv.train.model import ContextualNet, ModelConfig, build_model

FORMAT = "ctxconv-checkpoint-v1"
CHECKPOINT_NAME = "checkpoint.pt"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, corrupt, or does not match what it is loaded into."""


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write to a temporary file in the same directory, then rename: never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, **payload}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and sanity-check a checkpoint; CheckpointError says what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"no checkpoint at {path}: train first (ctxconv-train) "
            "or point to the run directory that holds checkpoint.pt"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated ({exc.__class__.__name__}: "
            f"{str(exc)[:200]}); delete it and retrain, or restore a copy"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(
            f"{path} is not a ctxconv checkpoint (format {found!r}, expected {FORMAT!r})"
        )
    for key in ("model_config", "state_dict", "progress"):
        if key not in payload:
            raise CheckpointError(
                f"checkpoint {path} lacks {key!r}; it was not written by ctxconv-train"
            )
    return payload


def model_config_from_dict(data: dict[str, Any]) -> ModelConfig:
    known = {f.name for f in fields(ModelConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise CheckpointError(
            f"checkpoint model config has unknown fields {unknown}: it comes from a newer ctxconv"
        )
    return ModelConfig(**data)


def restore_model(payload: dict[str, Any], path: str | Path = "checkpoint") -> ContextualNet:
    """Rebuild the network from the checkpoint's own config and load its weights."""
    model = build_model(model_config_from_dict(payload["model_config"]))
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(
            f"{path}: weights do not match the model config stored with them "
            f"({str(exc).splitlines()[0]})"
        ) from exc
    return model.eval()


def check_same_model(payload: dict[str, Any], cfg: ModelConfig, path: str | Path) -> None:
    """Refuse to resume a run whose checkpoint was made for another architecture."""
    stored = payload["model_config"]
    wanted = asdict(cfg)
    diff = {k: (stored.get(k), v) for k, v in wanted.items() if stored.get(k) != v}
    if diff:
        lines = ", ".join(f"{k}: checkpoint {a!r} vs config {b!r}" for k, (a, b) in diff.items())
        raise CheckpointError(
            f"cannot resume from {path}: the model differs ({lines}); "
            "use another hydra.run.dir or the same model settings"
        )
