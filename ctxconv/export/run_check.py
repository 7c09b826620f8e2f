"""Cross-checks of a run directory before its export: did it learn, is it the run it says.

``summary.json`` records what training measured. The exporter measures the float model
again on the same test split with the same normalisation; the two can differ only by
float nondeterminism (batch sizes, thread counts, kernels), which moves an image or two
across a near-tie. Anything beyond ``max(ACCURACY_TOLERANCE, MIN_IMAGES / n)`` means the
weights are not the ones that were evaluated, and the export stops.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from ctxconv.train.chance import chance_verdict
from ctxconv.train.checkpoint import SUMMARY_NAME

log = logging.getLogger(__name__)
ACCURACY_TOLERANCE = 0.005  # half a percentage point ...
MIN_IMAGES = 2  # ... or two test images, whichever is larger


class RunCheckError(RuntimeError):
    """The run did not learn, or its weights disagree with what its training recorded."""


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    """The run's summary.json, or None when training never finished."""
    path = run_dir / SUMMARY_NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RunCheckError(f"{path} is unreadable ({exc}): restore it from a copy, or "
                            "re-train the run") from None


def check_learned(summary: dict[str, Any] | None, run_dir: Path, allow_untrained: bool) -> None:
    """Refuse a run that ended at chance level on validation unless told to go on."""
    verdict = (summary or {}).get("chance") or {}
    if not verdict.get("at_chance"):
        return
    text = (f"{run_dir} did not learn: its best validation accuracy "
            f"{verdict['best_val_accuracy']:.2%} is at or below chance level "
            f"({verdict['chance_accuracy']:.2%}, threshold {verdict['threshold']:.2%})")
    if not allow_untrained:
        raise RunCheckError(f"{text}; re-train it (e.g. a lower trainer.lr), or pass "
                            "--allow-untrained to export it anyway")
    log.warning("%s; exporting anyway (--allow-untrained)", text)


def check_finished(payload: dict[str, Any], summary: dict[str, Any] | None, run_dir: Path,
                   allow_unfinished: bool) -> dict[str, Any]:
    """Refuse a run whose training did not finish unless told to go on; the manifest record."""
    progress = payload.get("progress") or {}
    done = bool(progress.get("done"))
    record = {"finished": done and summary is not None,
              "progress": {k: progress.get(k) for k in ("block", "epoch", "epochs")}}
    if record["finished"]:
        return record
    if not done:
        what = (f"its training is unfinished (the checkpoint stops after block "
                f"{progress.get('block')} epoch {progress.get('epoch')})")
    else:
        what = f"it has no {SUMMARY_NAME} (training stopped before its evaluation)"
    text = f"{run_dir} is not a finished run: {what}"
    if not allow_unfinished:
        raise RunCheckError(f"{text}; finish it with ctxconv-train hydra.run.dir={run_dir} "
                            "resume=true, or pass --allow-unfinished to export it anyway")
    log.warning("%s; exporting anyway (--allow-unfinished)", text)
    return record


def check_measured_chance(measured: dict[str, float], labels: torch.Tensor, num_classes: int,
                          run_dir: Path, allow_untrained: bool) -> dict[str, Any]:
    """Refuse a model whose float test accuracy measured here is at chance level."""
    verdict = chance_verdict(measured, labels, num_classes)
    verdict["measured_test_accuracy"] = verdict.pop("best_val_accuracy")
    if not verdict["at_chance"]:
        return verdict
    text = (f"{run_dir} did not learn: the float test accuracy measured at export "
            f"{verdict['measured_test_accuracy']:.2%} is at or below chance level "
            f"({verdict['chance_accuracy']:.2%}, threshold {verdict['threshold']:.2%})")
    if not allow_untrained:
        raise RunCheckError(f"{text}; re-train it (e.g. a lower trainer.lr), or pass "
                            "--allow-untrained to export it anyway")
    log.warning("%s; exporting anyway (--allow-untrained)", text)
    return verdict


def accuracy_tolerance(n: int) -> float:
    """The largest |measured - recorded| accuracy that float nondeterminism explains."""
    return max(ACCURACY_TOLERANCE, MIN_IMAGES / max(n, 1))


def check_float_accuracy(summary: dict[str, Any] | None, measured: dict[str, float], n: int,
                         normalisation: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Compare the export's float accuracy per mode with ``summary.json``'s test accuracy.

    Returns the record for the manifest; raises RunCheckError beyond the tolerance.
    """
    if summary is None:
        return {"checked": False, "reason": f"no {SUMMARY_NAME}"}
    recorded_norm = summary.get("normalisation")
    if recorded_norm is not None and recorded_norm != normalisation:
        raise RunCheckError(
            f"{run_dir / SUMMARY_NAME} records normalisation {recorded_norm} but the checkpoint "
            f"carries {normalisation}: the two files come from different runs; restore the "
            "run directory from a copy, or re-train it")
    if summary.get("test_size") != n:
        log.warning("the run was evaluated on %s test images and the export on %d: the float "
                    "accuracy is not cross-checked against %s", summary.get("test_size"), n,
                    SUMMARY_NAME)
        return {"checked": False, "reason": f"test split of {summary.get('test_size')} images "
                                            f"in the run, {n} in the export"}
    tol = accuracy_tolerance(n)
    recorded = summary.get("test_accuracy") or {}
    compared = {m: {"recorded": recorded[m], "measured": a} for m, a in measured.items()
                if m in recorded}
    for mode, pair in compared.items():
        if abs(pair["measured"] - pair["recorded"]) > tol:
            raise RunCheckError(
                f"{mode} float accuracy measured at export is {pair['measured']:.2%} but the run "
                f"recorded {pair['recorded']:.2%} in {run_dir / SUMMARY_NAME} on the same "
                f"{n} test images (tolerance {tol:.2%}): the checkpoint is not the model that "
                "was trained and evaluated; restore the run directory from a copy, or re-train")
    return {"checked": True, "tolerance": tol, "test_images": n, "modes": compared}
