"""``ctxconv-train``: Hydra entry point; all work happens in ``ctxconv.train.run``.

Examples::

    ctxconv-train                                   # digits, the embedded default
    ctxconv-train experiment=fashion_mnist          # the Fashion-MNIST benchmark model
    ctxconv-train trainer.epochs=3 hydra.run.dir=runs/quick
    ctxconv-train hydra.run.dir=runs/quick resume=true   # continue an interrupted run

Override keys are checked against the schema before Hydra starts (``+`` cannot add a
key), and so are the config group options and ``hydra.run.dir``; user errors print one
line and exit with code 2 (``CTXCONV_DEBUG=1``: traceback); Ctrl-C prints how to resume and
exits with code 130.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from ctxconv.cli_errors import debug_enabled, report_error
from ctxconv.train.checkpoint import CHECKPOINT_NAME, CheckpointError
from ctxconv.train.config import TrainAppConfig, register_configs
from ctxconv.train.data import DatasetUnavailableError
from ctxconv.train.distributed import DistributedTimeoutError
from ctxconv.train.lock import RunDirLockedError
from ctxconv.train.overrides import (
    check_group_choices,
    check_override_keys,
    check_override_values,
    check_run_dir,
)
from ctxconv.train.resume_config import resume_config
from ctxconv.train.trainer import TrainingDivergedError

log = logging.getLogger("ctxconv.train")
EXIT_ERROR, EXIT_INTERRUPTED = 2, 130
USER_ERRORS = (CheckpointError, DatasetUnavailableError, TrainingDivergedError, ValueError,
               FileNotFoundError, RunDirLockedError, DistributedTimeoutError)  # fmt: skip
register_configs()


def _run(cfg: DictConfig) -> None:
    from ctxconv.train import distributed
    from ctxconv.train.run import train_run

    run_dir = HydraConfig.get().runtime.output_dir
    if cfg.resume:
        cfg = resume_config(cfg, Path(run_dir), list(HydraConfig.get().overrides.task))
    app_cfg: TrainAppConfig = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    summary = train_run(app_cfg, run_dir)
    split = "test" if summary["test_accuracy"] is not None else "val"
    accuracy = summary[f"{split}_accuracy"]
    log.info(
        "%s accuracy on %s: %s (%d params, %.1fs training)",
        "test" if split == "test" else "validation (evaluate_test=false)",
        summary["dataset"],
        ", ".join(f"{m} {a:.2%}" for m, a in accuracy.items()),
        summary["params"],
        summary["train_seconds"],
    )
    if distributed.context_from_env().is_main:  # one line for the job, not one per rank
        print(json.dumps({"run_dir": run_dir, f"{split}_accuracy": accuracy}))


@hydra.main(version_base=None, config_path="../configs", config_name="train")
def _app(cfg: DictConfig) -> None:
    try:
        _run(cfg)
    except USER_ERRORS as exc:
        sys.exit(report_error(exc, EXIT_ERROR))
    except KeyboardInterrupt:
        if debug_enabled():
            raise
        sys.exit(_interrupted(Path(HydraConfig.get().runtime.output_dir)))


def _interrupted(run_dir: Path) -> int:
    """One line for Ctrl-C: how to continue (the checkpoint is written atomically)."""
    from ctxconv.train import distributed

    if distributed.context_from_env().is_main:
        if (run_dir / CHECKPOINT_NAME).is_file():
            print(f"interrupted; resume with ctxconv-train hydra.run.dir={run_dir} resume=true "
                  "(the checkpoint of the last completed epoch is intact)", file=sys.stderr)
        else:
            print(f"interrupted before the first epoch ended: {run_dir} has no checkpoint to "
                  "resume; start the run again", file=sys.stderr)
    return EXIT_INTERRUPTED


def main() -> None:
    overrides = [a for a in sys.argv[1:] if "=" in a and not a.startswith("-")]
    try:
        check_override_keys(overrides, TrainAppConfig)
        check_override_values(overrides, TrainAppConfig)
        check_group_choices(overrides)
        check_run_dir(overrides)
    except ValueError as exc:
        sys.exit(report_error(exc, EXIT_ERROR))
    _app()


if __name__ == "__main__":
    main()
