"""Entry points of the torch commands: a clear error, not a traceback, without the extra.

``pip install ctxconv`` gives the simulator, runtimes, C generator and firmware backend;
training and export need torch, which the ``train`` extra adds. These launchers check for
it before importing the command, so a missing extra reads as one line saying what to
install (exit 2).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

from ctxconv.cli_errors import report_error

#: Modules the train extra brings (``pip install "ctxconv[train]"``).
TRAIN_EXTRA = ("torch", "torchvision", "hydra", "sklearn", "tqdm")


def missing_train_modules() -> list[str]:
    return [m for m in TRAIN_EXTRA if importlib.util.find_spec(m) is None]


def _launch(command: str, module: str) -> None:
    missing = missing_train_modules()
    if missing:
        sys.exit(report_error(RuntimeError(
            f"{command} needs the training extra ({', '.join(missing)} not installed): "
            'pip install "ctxconv[train]" (from a clone: pip install -e ".[train]")')))
    importlib.import_module(module).main()


def train() -> None:
    """``ctxconv-train``."""
    _launch("ctxconv-train", "ctxconv.train.cli")


def export() -> None:
    """``ctxconv-export``."""
    _launch("ctxconv-export", "ctxconv.export.cli")
