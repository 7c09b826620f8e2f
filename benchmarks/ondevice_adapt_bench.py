"""On-device adaptation benchmark: what training the last block in the simulator buys.

    python benchmarks/ondevice_adapt_bench.py [EXPORT_DIR]   # default: the Fashion-MNIST export

A deployed model meets a changed sensor: every image (training vectors and test vectors
alike) gets lower contrast and a brightness offset, ``raw' = 0.5 * raw + 100``. The frozen
int8 prefix runs unchanged; the last block (the scoring block) is trained in the
simulator on the export's 1000 training vectors, with ``--update bias`` (fits 256 KB),
``head`` or ``all`` (do not fit), SGD, 5 epochs, batch 8; accuracy is read on the
shifted test vectors once, after training. Writes the "On-device adaptation" section.
"""

from __future__ import annotations

import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import ROOT, git_rev, machine, write_section  # noqa: E402

from ctxconv.firmware_sim.bundle import load_export  # noqa: E402
from ctxconv.firmware_sim.ondevice import (  # noqa: E402
    FrozenPrefix,
    accuracy,
    block_from_export,
    local_step,
    make_optimizer,
    trainable_names,
)

EPOCHS, BATCH, SEED = 5, 8, 0
LR = {"bias": 0.05, "head": 0.01, "all": 0.01}


def shift(raw: np.ndarray) -> np.ndarray:
    return np.clip(0.5 * raw.astype(np.float32) + 100, 0, 255).round().astype(np.uint8)


def adapt(bundle, float_dir: Path, index: int, x, y, x_test, y_test, update: str) -> dict:
    block = block_from_export(float_dir, index)
    names = trainable_names(block.geom, update)
    opt = make_optimizer("sgd", LR[update])
    rng = np.random.default_rng(SEED)
    t0 = time.perf_counter()
    for _ in range(EPOCHS):
        order = rng.permutation(len(y))
        for i in range(0, len(y) - BATCH + 1, BATCH):
            idx = order[i : i + BATCH]
            local_step(block, opt, x[idx], y[idx].astype(np.int64), "softmax", names)
    return {"update": update, "accuracy": accuracy(block, x_test, y_test),
            "trained_params": int(sum(block.params[n].size for n in names)),
            "host_seconds": round(time.perf_counter() - t0, 1)}


def main() -> None:
    default = ROOT / "benchmarks/runs/fashion_mnist/export"
    export_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else default
    float_dir = export_dir.with_name("export-float")
    bundle = load_export(export_dir)
    index = len(bundle.blocks) - 1
    prefix = FrozenPrefix(bundle, index)
    raw, labels = bundle.train_vectors()
    raw_test, labels_test = bundle.test_vectors()
    x, x_test = prefix(shift(raw)), prefix(shift(raw_test))
    clean = accuracy(block_from_export(float_dir, index), prefix(raw_test), labels_test)
    before = accuracy(block_from_export(float_dir, index), x_test, labels_test)
    rows = [adapt(bundle, float_dir, index, x, labels, x_test, labels_test, u)
            for u in ("bias", "head", "all")]
    res = {"date": date.today().isoformat(), "commit": git_rev(), "block": index,
           "clean_accuracy": clean, "shifted_before": before, "rows": rows,
           "train_vectors": int(len(labels)), "test_vectors": int(len(labels_test)),
           "epochs": EPOCHS, "batch": BATCH, "lr": LR}
    pct = lambda v: f"{100 * v:.2f} %"  # noqa: E731
    lines = ["## On-device adaptation (`benchmarks/ondevice_adapt_bench.py`)", "",
             f"Machine: {machine()}. Date: {res['date']}. Commit: {res['commit']}. Command: "
             "`python benchmarks/ondevice_adapt_bench.py`. Fashion-MNIST model; every image "
             "shifted by `0.5 * raw + 100` (a dimmer, lower-contrast sensor); the frozen int8 "
             f"prefix unchanged; block {index} (the scoring block) trained in the simulator on "
             f"the export's {res['train_vectors']} training vectors (SGD, {EPOCHS} epochs, "
             f"batch {BATCH}); accuracy on the {res['test_vectors']} shifted test vectors.", "",
             f"Before: {pct(clean)} on clean images, {pct(before)} on shifted images.", "",
             "| update | trained parameters | learning rate | accuracy after | fits nRF52840 "
             "(see On-device training) |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['update']} | {r['trained_params']:,} | {LR[r['update']]} | "
                     f"{pct(r['accuracy'])} | {'yes' if r['update'] == 'bias' else 'no'} |")
    lines.append("")
    write_section("ondevice_adapt", res, lines)


if __name__ == "__main__":
    main()
