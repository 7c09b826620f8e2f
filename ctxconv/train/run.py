"""One training run: data, model, block-wise training, evaluation, run directory.

The run directory holds ``config.yaml`` (resolved), ``checkpoint.pt`` (atomic, after
every epoch), ``metrics.jsonl``, ``training_curves.png`` and ``summary.json``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from ctxconv.progress import ThrottledBar
from ctxconv.train import distributed
from ctxconv.train.chance import chance_verdict
from ctxconv.train.checkpoint import (
    CHECKPOINT_NAME,
    SUMMARY_NAME,
    CheckpointError,
    check_same_model,
    load_checkpoint,
    save_checkpoint,
)
from ctxconv.train.config import TrainAppConfig, validate_config
from ctxconv.train.data import load_datasets, make_loader, set_seed
from ctxconv.train.device import check_precision, resolve_device, threads
from ctxconv.train.distributed import DistContext
from ctxconv.train.inference import available_modes, evaluate
from ctxconv.train.lock import RunDirLock
from ctxconv.train.model import ModelConfig, build_model, count_params, per_block
from ctxconv.train.objectives import OBJECTIVES
from ctxconv.train.plots import plot_training_curves
from ctxconv.train.trainer import METRICS_NAME, BlockwiseTrainer, repair_metrics
from ctxconv.workdirs import sweep_stale

log = logging.getLogger(__name__)
CURVES_NAME = "training_curves.png"


def _wandb_run(cfg: TrainAppConfig, run_dir: Path):
    if not cfg.wandb.enabled:
        return None
    try:
        import wandb
    except ImportError as exc:
        raise RuntimeError(
            "wandb.enabled=true but wandb is not installed: pip install 'ctxconv[wandb]'"
        ) from exc
    return wandb.init(
        project=cfg.wandb.project,
        entity=cfg.wandb.entity,
        mode=cfg.wandb.mode,
        dir=str(run_dir),
        config=OmegaConf.to_container(OmegaConf.structured(cfg)),
    )


def _prepare_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> dict[str, Any] | None:
    """The checkpoint to resume from, or None; refuses to overwrite a run unless told to.

    Overwrite removes the old run's metrics and summary (a partial new model is never
    compared with the old run's accuracy); resume drops metrics rows the checkpoint lacks.
    """
    ckpt = run_dir / CHECKPOINT_NAME
    for name in (CHECKPOINT_NAME, METRICS_NAME):  # left by a killed write
        sweep_stale(run_dir, f".{name}.")
    if resume:
        if not ckpt.exists():
            raise CheckpointError(
                f"resume=true but {run_dir} has no {CHECKPOINT_NAME}: pass the "
                "interrupted run's directory as hydra.run.dir=DIR"
            )
        payload = load_checkpoint(ckpt)
        repair_metrics(run_dir / METRICS_NAME, payload["progress"])
        if not payload["progress"].get("done"):
            (run_dir / SUMMARY_NAME).unlink(missing_ok=True)
        return payload
    if ckpt.exists() and not overwrite:
        raise CheckpointError(
            f"{run_dir} already holds a run: add resume=true to continue it, "
            "overwrite=true to start afresh, or choose another hydra.run.dir"
        )
    for name in (SUMMARY_NAME, METRICS_NAME, CURVES_NAME):
        (run_dir / name).unlink(missing_ok=True)
    return None


def _evaluated(model, data, batch_size: int, modes: list[str], split: str, progress: bool
               ) -> dict[str, float]:
    """Accuracy per mode on ``data``, with a bar per mode (a terminal and trainer.progress)."""
    out = {}
    for m in modes:
        with ThrottledBar(len(data), f"{split} accuracy ({m})", None if progress else False,
                          unit="image") as bar:
            out[m] = evaluate(model, make_loader(data, batch_size, False), m, bar.step)
    return out


def train_run(cfg: TrainAppConfig, run_dir: str | Path) -> dict[str, Any]:
    """Train (or resume), evaluate on the test split once per mode, write the run dir.

    Under torchrun every rank trains its shard and rank 0 alone writes ``run_dir``.
    """
    if cfg.resume and cfg.overwrite:
        raise ValueError("resume=true and overwrite=true contradict each other: choose one")
    validate_config(cfg)
    ctx = distributed.context_from_env()
    device = resolve_device(cfg.trainer.device, ctx.local_rank)
    check_precision(cfg.trainer.precision, device)
    distributed.init(ctx, device, cfg.data.batch_size, cfg.trainer.dist_timeout_s)
    if not ctx.is_main:  # one process speaks for the job
        logging.getLogger("ctxconv").setLevel(logging.WARNING)
    try:
        run_dir = Path(distributed.broadcast(ctx, str(run_dir)))
        with (threads(cfg.threads), _writer_lock(run_dir, ctx),
              distributed.naming_timeouts(ctx, "training")):
            return _train_run(cfg, run_dir, ctx, device)
    finally:
        distributed.shutdown(ctx)


def _writer_lock(run_dir: Path, ctx: DistContext) -> contextlib.AbstractContextManager:
    """Rank 0 holds the run directory's lock for the whole run; the other ranks none."""
    if not ctx.is_main:
        return contextlib.nullcontext()
    run_dir.mkdir(parents=True, exist_ok=True)
    return RunDirLock(run_dir)


def _train_run(
    cfg: TrainAppConfig, run_dir: Path, ctx: DistContext, device: torch.device
) -> dict[str, Any]:
    set_seed(cfg.seed)
    train, val, test, info = load_datasets(cfg.data)
    cfg.data.num_classes = info.num_classes
    model_cfg = ModelConfig(
        **{
            **asdict(cfg.model),
            "in_channels": info.in_channels,
            "image_size": info.image_size,
            "num_classes": info.num_classes,
        }
    )
    model = build_model(model_cfg)
    per_block(cfg.trainer.objective, len(model.blocks), "trainer.objective", OBJECTIVES)
    # the config is sound: only now may the run directory change
    if ctx.is_main:
        payload = _prepare_run_dir(run_dir, cfg.resume, cfg.overwrite)
    distributed.barrier(ctx)  # rank 0 has checked (and cleared) the run directory
    if not ctx.is_main:
        payload = load_checkpoint(run_dir / CHECKPOINT_NAME) if cfg.resume else None
    progress = states = None
    previous_seconds = 0.0
    if payload is not None:
        check_same_model(payload, model_cfg, run_dir / CHECKPOINT_NAME)
        model.load_state_dict(payload["state_dict"])
        progress = payload["progress"]
        states = {"optimizer": payload.get("optimizer"), "scheduler": payload.get("scheduler")}
        previous_seconds = float(payload.get("train_seconds", 0.0))
        log.info(
            "resuming %s after block %d epoch %d", run_dir, progress["block"], progress["epoch"]
        )
    if ctx.is_main:  # overwrite=true is an instruction for this start, not stored config
        stored = OmegaConf.structured(cfg)
        stored.overwrite = False
        OmegaConf.save(stored, run_dir / "config.yaml")
    extra = {"dataset": asdict(info), "data": asdict(cfg.data), "seed": cfg.seed,
             "trainer": asdict(cfg.trainer)}
    wandb_run = _wandb_run(cfg, run_dir) if ctx.is_main else None
    on_epoch = (lambda row: wandb_run.log(row)) if wandb_run is not None else None
    trainer = BlockwiseTrainer(
        model,
        cfg.trainer,
        cfg.data,
        run_dir,
        seed=cfg.seed,
        on_epoch=on_epoch,
        checkpoint_extra=extra,
        initial_seconds=previous_seconds,
        device=device,
        dist_ctx=ctx,
    )
    log.info(
        "model: %d parameters, blocks %s, data %s (%s)",
        count_params(model),
        model_cfg.blocks,
        info.name,
        info.source,
    )
    if not (progress and progress.get("done")):
        trainer.fit(train, val, progress, states)
    if not ctx.is_main:  # rank 0 evaluates and writes; the others return its summary
        distributed.barrier(ctx)
        return json.loads((run_dir / SUMMARY_NAME).read_text())
    model.eval()
    modes = available_modes(model)
    eval_bs = cfg.trainer.eval_batch_size
    t0 = time.perf_counter()
    val_acc = _evaluated(model, val, eval_bs, modes, "validation", cfg.trainer.progress)
    test_acc = (_evaluated(model, test, eval_bs, modes, "test", cfg.trainer.progress)
                if cfg.evaluate_test else None)
    summary = {
        "dataset": info.name, "test_accuracy": test_acc, "val_accuracy": val_acc,
        "params": count_params(model), "train_seconds": round(trainer.train_seconds, 2),
        "eval_seconds": round(time.perf_counter() - t0, 2), "blocks": model_cfg.blocks,
        "objective": cfg.trainer.objective, "epochs_per_block": cfg.trainer.epochs,
        "method": cfg.trainer.method, "schedule": cfg.trainer.schedule,
        "label_smoothing": cfg.trainer.label_smoothing, "negatives": cfg.data.negatives,
        "contextual": model_cfg.contextual, "injection": model_cfg.injection,
        "goodness": model_cfg.goodness, "norm": model_cfg.norm,
        "seed": cfg.seed, "normalisation": {"mean": info.mean, "std": info.std},
        "train_size": info.train_size, "val_size": info.val_size, "test_size": info.test_size,
        "onepass_available": "onepass" in modes, "run_dir": str(run_dir),
        "chance": chance_verdict(val_acc, val.tensors[1], info.num_classes),
        "device": str(device), "precision": cfg.trainer.precision, "processes": ctx.world_size,
        "prefix_cache": {str(b): why for b, why in trainer.cache_plans.items()},
    }  # fmt: skip
    if summary["chance"]["at_chance"]:
        log.warning(
            "the run did not learn: best validation accuracy %.2f%% is at or below chance level "
            "(%.2f%%; anything up to %.2f%% is indistinguishable from guessing). Try a lower "
            "trainer.lr (now %g) or more epochs; ctxconv-export refuses this run unless "
            "given --allow-untrained",
            100 * summary["chance"]["best_val_accuracy"],
            100 * summary["chance"]["chance_accuracy"],
            100 * summary["chance"]["threshold"],
            cfg.trainer.lr,
        )
    # the final weights without optimizer state: what export reads
    final = load_checkpoint(run_dir / CHECKPOINT_NAME)
    for key in ("optimizer", "scheduler"):
        final.pop(key, None)
    final.pop("format", None)
    save_checkpoint(run_dir / CHECKPOINT_NAME, final)
    with open(run_dir / SUMMARY_NAME, "w") as f:
        json.dump(summary, f, indent=2)
    plot_training_curves(run_dir / METRICS_NAME, run_dir / CURVES_NAME)
    if wandb_run is not None:
        wandb_run.summary.update({f"test_accuracy/{m}": a for m, a in (test_acc or {}).items()})
        wandb_run.finish()
    distributed.barrier(ctx)  # summary.json is written: the other ranks may read it
    return summary
