"""On-device adaptation benchmark: what training the last block in the simulator buys.

    python benchmarks/ondevice_adapt_bench.py [EXPORT_DIR] [--batch N] [--float-export DIR]
    python benchmarks/ondevice_adapt_bench.py --render   # markdown from the stored JSON only

EXPORT_DIR defaults to ``benchmarks/runs/fashion_mnist/export`` (``ctxconv-export RUN --int8``
of ``ctxconv-train experiment=fashion_mnist hydra.run.dir=RUN``). The float reference
export it trains from (``--float-export``, default ``export-float`` beside EXPORT_DIR) is
created, when missing, with ``ctxconv-export RUN --out DIR`` (RUN: EXPORT_DIR's parent), and
the script says so.

A deployed model meets a changed sensor: every image (training vectors and test vectors
alike) gets lower contrast and a brightness offset, ``raw' = 0.5 * raw + 100``. The frozen
int8 prefix runs unchanged; the last block (the scoring block) is trained in the
simulator with ``--update bias``, ``head`` or ``all`` (SGD with momentum, 5 epochs). The
export's training vectors are the adaptation data: a seeded 20 % of them is held out to
choose each mode's learning rate from a grid, then the block is trained on all of them at
that rate; the shifted test vectors are read once, after training. Whether each mode fits
the nRF52840 comes from the planner (``block_report``) at the batch used, which by default
is the largest at which bias-only training fits it. Writes the "On-device adaptation"
section.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a path: the repository

from benchmarks.provenance import relative
from benchmarks.report import provenance_line, start, write_section
from ctxconv.blockgraph.bundle import load_export
from ctxconv.ondevice import (
    ExportModel,
    FrozenPrefix,
    accuracy,
    block_from_export,
    block_report,
    geometries,
    local_step,
    make_optimizer,
    trainable_names,
)
from ctxconv.sim.profiles import load_profile

EPOCHS, SEED, HELD_OUT = 5, 0, 0.2
OPTIMIZER, OBJECTIVE, MCU = "sgd", "softmax", "nrf52840"
UPDATES = ("bias", "head", "all")
LR_GRID = (0.003, 0.01, 0.03, 0.1, 0.3)
KB = 1024


def shift(raw: np.ndarray) -> np.ndarray:
    return np.clip(0.5 * raw.astype(np.float32) + 100, 0, 255).round().astype(np.uint8)


def ensure_float_export(export_dir: Path, float_dir: Path) -> tuple[Path, str | None]:
    """The float reference export; created with ctxconv-export when missing.

    Returns the directory and the command that created it (None when it existed)."""
    if (float_dir / "manifest.json").is_file():
        return float_dir, None
    cmd = ["ctxconv-export", str(export_dir.parent), "--out", str(float_dir)]
    print(f"{float_dir} is missing: creating it with `{' '.join(cmd)}`", flush=True)
    subprocess.run(cmd, check=True)
    return float_dir, relative(" ".join(cmd))


def fit_verdicts(bundle, index: int, batch: int) -> dict[str, dict]:
    """Planner verdict per update mode for training block ``index`` on the MCU at ``batch``."""
    model = ExportModel(geometries(bundle), bundle.graphs, [len(b) for b in bundle.tflite],
                        bundle.tflite)
    profile = load_profile(MCU)
    out = {}
    for update in UPDATES:
        r = block_report(model, index, profile, batch, OPTIMIZER, OBJECTIVE, update)
        out[update] = {k: r[k] for k in ("fits", "fits_sram", "fits_flash", "sram_bytes",
                                         "available_sram_bytes", "flash_bytes",
                                         "available_flash_bytes", "largest_batch")}
    return out


def train(float_dir: Path, index: int, x, y, update: str, lr: float, batch: int):
    block = block_from_export(float_dir, index)
    names = trainable_names(block.geom, update)
    opt = make_optimizer(OPTIMIZER, lr)
    rng = np.random.default_rng(SEED)
    for _ in range(EPOCHS):
        order = rng.permutation(len(y))
        for i in range(0, len(y) - batch + 1, batch):
            idx = order[i : i + batch]
            local_step(block, opt, x[idx], y[idx].astype(np.int64), OBJECTIVE, names)
    return block, names


def adapt(float_dir: Path, index: int, x, y, fit_idx, held_idx, x_test, y_test, update: str,
          batch: int) -> dict:
    """Choose the learning rate on the held-out adaptation images, then train on all."""
    t0 = time.perf_counter()
    held = {}
    for lr in LR_GRID:
        try:
            block, _ = train(float_dir, index, x[fit_idx], y[fit_idx], update, lr, batch)
            held[lr] = accuracy(block, x[held_idx], y[held_idx])
        except FloatingPointError:  # diverged at this rate
            held[lr] = None
    best = max((lr for lr in LR_GRID if held[lr] is not None), key=lambda lr: held[lr])
    block, names = train(float_dir, index, x, y, update, best, batch)
    return {"update": update, "lr": best, "held_out_accuracy": held,
            "accuracy": accuracy(block, x_test, y_test),
            "trained_params": int(sum(block.params[n].size for n in names)),
            "host_seconds": round(time.perf_counter() - t0, 1)}


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--float-export", default=None,
                        help="float reference export (default: export-float beside EXPORT_DIR; "
                             "created with ctxconv-export RUN --out DIR when missing)")
    parser.add_argument("--batch", type=int, default=None,
                        help="training batch (default: the largest at which bias-only training "
                             f"fits the {MCU}, from the planner)")


def main() -> None:
    if (started := start(__doc__, "ondevice_adapt", render, options,
                         export_dir="benchmarks/runs/fashion_mnist/export")) is None:
        return
    args, stamp = started
    export_dir = Path(args.export_dir)
    float_dir, created = ensure_float_export(
        export_dir, Path(args.float_export) if args.float_export else
        export_dir.with_name("export-float"))
    bundle = load_export(export_dir)
    index = len(bundle.blocks) - 1
    batch = args.batch or fit_verdicts(bundle, index, 1)["bias"]["largest_batch"]
    if batch < 1:
        raise SystemExit(f"error: bias-only training of block {index} fits the {MCU} at no "
                         "batch; pass --batch")
    fits = fit_verdicts(bundle, index, batch)
    prefix = FrozenPrefix(bundle, index)
    raw, labels = bundle.train_vectors()
    raw_test, labels_test = bundle.test_vectors()
    x, x_test = prefix(shift(raw)), prefix(shift(raw_test))
    order = np.random.default_rng(SEED).permutation(len(labels))
    n_held = int(round(HELD_OUT * len(labels)))
    held_idx, fit_idx = order[:n_held], order[n_held:]
    clean = accuracy(block_from_export(float_dir, index), prefix(raw_test), labels_test)
    before = accuracy(block_from_export(float_dir, index), x_test, labels_test)
    rows = [adapt(float_dir, index, x, labels, fit_idx, held_idx, x_test, labels_test, u, batch)
            | {"fit": fits[u]} for u in UPDATES]
    res = {"provenance": stamp, "block": index, "mcu": MCU, "clean_accuracy": clean,
           "shifted_before": before, "rows": rows, "train_vectors": int(len(labels)),
           "held_out": int(n_held), "test_vectors": int(len(labels_test)), "epochs": EPOCHS,
           "batch": batch, "batch_from_planner": args.batch is None, "lr_grid": list(LR_GRID),
           "optimizer": OPTIMIZER, "export": relative(str(export_dir)),
           "float_export": relative(str(float_dir)), "float_export_created_by": created}
    write_section("ondevice_adapt", res, render(res))


def render(res: dict) -> list[str]:
    def pct(v: float) -> str:
        return f"{100 * v:.2f} %"

    batch_note = (f"the largest at which bias-only training fits the {res['mcu']}, from the "
                  "planner" if res["batch_from_planner"] else "given with --batch")
    lines = ["## On-device adaptation (`benchmarks/ondevice_adapt_bench.py`)", "",
             provenance_line(res.get("provenance")), "",
             "Fashion-MNIST model; every image shifted by `0.5 * raw + 100` (a dimmer, "
             f"lower-contrast sensor); the frozen int8 prefix unchanged; block {res['block']} "
             "(the scoring block) trained in the simulator from the float reference export "
             f"(`{res['float_export']}`, "
             + (f"created by this run with `{res['float_export_created_by']}`"
                if res.get("float_export_created_by") else "made by `ctxconv-export RUN --out DIR`")
             + ") on the export's "
             f"{res['train_vectors']} training vectors ({res['optimizer'].upper()} with momentum, "
             f"{res['epochs']} epochs, batch {res['batch']}: {batch_note}). Learning rate per "
             f"mode chosen from {res['lr_grid']} by accuracy on a held-out {res['held_out']} of "
             f"those {res['train_vectors']} images (trained on the other "
             f"{res['train_vectors'] - res['held_out']}), then trained on all "
             f"{res['train_vectors']}; the {res['test_vectors']} shifted test vectors are read "
             "once, after training.", "",
             f"Before: {pct(res['clean_accuracy'])} on clean images, "
             f"{pct(res['shifted_before'])} on shifted images.", "",
             f"| update | trained parameters | learning rate (held-out accuracy) | accuracy after "
             f"| fits {res['mcu']} at batch {res['batch']} (planner: training SRAM, flash) |",
             "|---|---|---|---|---|"]
    for r in res["rows"]:
        f = r["fit"]
        why = []
        if not f["fits_sram"]:
            why.append("SRAM")
        if not f["fits_flash"]:
            why.append("flash")
        verdict = "yes" if f["fits"] else f"no ({' and '.join(why)})"
        held = r["held_out_accuracy"]
        held_str = held.get(r["lr"], held.get(str(r["lr"])))
        lines.append(f"| {r['update']} | {r['trained_params']:,} | {r['lr']} ({pct(held_str)}) | "
                     f"{pct(r['accuracy'])} | {verdict}: {f['sram_bytes'] / KB:.1f} of "
                     f"{f['available_sram_bytes'] / KB:.0f} KB, {f['flash_bytes'] / KB:.1f} of "
                     f"{f['available_flash_bytes'] / KB:.0f} KB |")
    edge = [r["update"] for r in res["rows"] if r["lr"] in (min(res["lr_grid"]), max(res["lr_grid"]))]
    if edge:
        lines += ["", "Learning rate chosen at the edge of the grid for: " + ", ".join(edge)
                  + " (a wider grid might do better there)."]
    lines.append("")
    return lines


if __name__ == "__main__":
    main()
