"""Checkpoints that carry their own model config, written atomically and sealed.

A checkpoint is a dict: ``format`` (version tag), ``model_config`` (a ModelConfig as a
dict), ``state_dict``, ``dataset`` (DatasetInfo as a dict: classes, normalisation),
``progress`` (last completed block and epoch), ``integrity`` (sha256 of the tensor
payload, of the model config and of the rest) and, while training, the optimizer and
scheduler states. The file ends with the sha256 of its own bytes (``integrity.seal``).
Every reader goes through ``load_checkpoint``, which refuses a file that does not match
its digests. Export and simulation only need this file.
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import torch

from ctxconv.train.integrity import SealError, check_seal, content_digests, seal
from ctxconv.train.model import ContextualNet, ModelConfig, build_model

log = logging.getLogger(__name__)
FORMAT = "ctxconv-checkpoint-v2"
UNSEALED_FORMAT = "ctxconv-checkpoint-v1"  # before digests: loads with a warning
CHECKPOINT_NAME = "checkpoint.pt"
SUMMARY_NAME = "summary.json"  # beside it in a run directory: what training measured
_NOT_DIGESTED = ("format", "integrity")


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, corrupt, or does not match what it is loaded into."""


class CheckpointIntegrityError(CheckpointError):
    """A checkpoint whose bytes or contents differ from the digests written with it."""


def _damaged(path: Path, what: str) -> CheckpointIntegrityError:
    return CheckpointIntegrityError(
        f"checkpoint {path} is damaged: {what}. It cannot be trusted for export or resume: "
        "restore the run directory from a copy, or re-train it "
        "(ctxconv-train hydra.run.dir=DIR overwrite=true)"
    )


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write to a temporary file in the same directory, then rename: never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {k: v for k, v in payload.items() if k not in _NOT_DIGESTED}
    buf = io.BytesIO()
    torch.save({"format": FORMAT, **payload, "integrity": content_digests(payload)}, buf)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.",
                               suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(seal(buf.getvalue()))
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
    data = path.read_bytes()
    try:
        sealed = check_seal(data)
    except SealError as exc:
        raise _damaged(path, str(exc)) from None
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise _damaged(path, f"torch.load cannot read it ({exc.__class__.__name__}: "
                             f"{str(exc)[:200]})") from exc
    found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
    if found not in (FORMAT, UNSEALED_FORMAT):
        raise CheckpointError(
            f"{path} is not a ctxconv checkpoint (format {found!r}, expected {FORMAT!r})"
        )
    _check_contents(path, payload, sealed)
    for key in ("model_config", "state_dict", "progress"):
        if key not in payload:
            raise CheckpointError(
                f"checkpoint {path} lacks {key!r}; it was not written by ctxconv-train"
            )
    return payload


def _check_contents(path: Path, payload: dict[str, Any], sealed: bool) -> None:
    """Compare the payload with the digests stored in it; warn for pre-digest files."""
    if payload["format"] == UNSEALED_FORMAT:
        log.warning(
            "checkpoint %s carries no digest (written by an older ctxconv): its integrity "
            "cannot be checked; compare it with a copy, or re-train, if in doubt",
            path,
        )
        return
    stored = payload.get("integrity")
    if not isinstance(stored, dict):
        raise _damaged(path, "its digests are missing")
    actual = content_digests(payload, skip=_NOT_DIGESTED)
    names = {"state_dict": "tensor payload", "model_config": "model config",
             "metadata": "metadata (data set, normalisation, progress)"}  # fmt: skip
    bad = [names[k] for k in names if stored.get(k) != actual[k]]
    if bad:
        parts = " or its ".join(bad)
        raise _damaged(path, f"the sha256 written with it does not match its {parts}")
    if not sealed:
        log.warning("checkpoint %s was re-saved without its file seal; its content digests "
                    "match", path)


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
