"""``ctxconv-train``: Hydra entry point; all work happens in ``ctxconv.train.run``.

Examples::

    ctxconv-train                                   # digits, the embedded default
    ctxconv-train experiment=fashion_mnist          # the Fashion-MNIST benchmark model
    ctxconv-train trainer.epochs=3 hydra.run.dir=runs/quick
    ctxconv-train hydra.run.dir=runs/quick resume=true   # continue an interrupted run
"""

from __future__ import annotations

import json
import logging

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from ctxconv.train.config import TrainAppConfig, register_configs

log = logging.getLogger("ctxconv.train")
register_configs()


@hydra.main(version_base=None, config_path="../configs", config_name="train")
def _app(cfg: DictConfig) -> None:
    from ctxconv.train.run import train_run

    app_cfg: TrainAppConfig = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    run_dir = HydraConfig.get().runtime.output_dir
    summary = train_run(app_cfg, run_dir)
    acc = ", ".join(f"{m} {a:.2%}" for m, a in summary["test_accuracy"].items())
    log.info(
        "test accuracy on %s: %s (%d params, %.1fs training)",
        summary["dataset"],
        acc,
        summary["params"],
        summary["train_seconds"],
    )
    print(json.dumps({"run_dir": run_dir, "test_accuracy": summary["test_accuracy"]}))


def main() -> None:
    _app()


if __name__ == "__main__":
    main()
