"""``ctxconv-sim-train EXPORT_DIR --mcu NAME``: forward-only training of each block on an MCU.

Per block: training SRAM at the batch (buffers placed by TFLM's greedy planner), flash,
the largest batch that fits on every known profile, float32 MACs and estimated time per
step, beside backprop through the whole network; exit code 4 when a block does not fit
at the requested batch, 2 on bad input. ``--steps N`` also runs N simulated training
steps per block on the export's training vectors (its calibration images) and reports
the accuracy of that block's goodness on the test vectors before and after.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ctxconv.blockgraph.ir import ModelFileError
from ctxconv.cli_errors import DEBUG_HELP, report_error
from ctxconv.firmware_sim.bundle import ExportBundle, load_export
from ctxconv.firmware_sim.ondevice.accounting import ExportModel, backprop_report, block_report
from ctxconv.firmware_sim.ondevice.geometry import UPDATE_MODES
from ctxconv.firmware_sim.ondevice.loading import block_from_export, geometries
from ctxconv.firmware_sim.ondevice.losses import OBJECTIVES, wrong_labels
from ctxconv.firmware_sim.ondevice.optim import OPTIMIZERS, make_optimizer
from ctxconv.firmware_sim.ondevice.prefix import FrozenPrefix
from ctxconv.firmware_sim.ondevice.step import accuracy, local_step
from ctxconv.firmware_sim.profiles import list_profiles, load_profile

EXIT_ERROR, EXIT_DOES_NOT_FIT = 2, 4
KB = 1024


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ctxconv-sim-train",
        description="Size forward-only on-device training of every block of an int8 export: "
                    "training SRAM, flash, largest batch per MCU profile, MACs and time per "
                    "step, and backprop through the whole network for comparison.",
    )  # fmt: skip
    p.add_argument("export_dir", help="int8 export (ctxconv-export RUN_DIR --int8); a float "
                   "export works when the int8 one sits beside it as RUN_DIR/export")
    p.add_argument("--mcu", default="nrf52840",
                   help=f"MCU profile name or YAML path (packaged: {', '.join(list_profiles())})")
    p.add_argument("--batch", type=int, default=8, help="training batch size (default 8)")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd")
    p.add_argument("--objective", choices=OBJECTIVES, default="softmax")
    p.add_argument("--update", choices=sorted(UPDATE_MODES), default="all",
                   help="parameters trained: all, head (goodness head only) or bias (conv "
                        "bias, context weight, head bias); the rest stay int8 in flash")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate for --steps")
    p.add_argument("--steps", type=int, default=0,
                   help="also run N simulated training steps per block on the export's "
                        "training vectors (accuracy on its test vectors)")
    p.add_argument("--float-export", default=None,
                   help="float export for the initial weights of --steps (default: "
                        "RUN_DIR/export-float when present, else the dequantized int8 weights)")
    p.add_argument("--json", dest="json_path", default=None, help="write the report as JSON")
    p.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    return p


def _bundles(export_dir: Path, float_dir: str | None) -> tuple[ExportBundle, ExportBundle]:
    """(int8 export for accounting and the prefix, export for initial weights)."""
    bundle = load_export(export_dir)
    int8 = bundle
    if not bundle.manifest.get("int8"):
        sibling = export_dir.parent / "export"
        if not (sibling / "manifest.json").is_file():
            raise ModelFileError(f"{export_dir} is a float export and no int8 export sits beside "
                                 f"it ({sibling}): run ctxconv-export RUN_DIR --int8 first")
        int8 = load_export(sibling)
        if not int8.manifest.get("int8"):
            raise ModelFileError(f"{sibling} is not an int8 export")
    init = bundle if not bundle.manifest.get("int8") else int8
    candidate = Path(float_dir) if float_dir else export_dir.parent / "export-float"
    if float_dir or (candidate / "manifest.json").is_file():
        init = load_export(candidate)
    if len(init.graphs) != len(int8.graphs):
        raise ModelFileError(f"{init.path} and {int8.path} hold different models")
    return int8, init


def run_steps(int8: ExportBundle, init: ExportBundle, index: int, steps: int, batch: int,
              optimizer: str, objective: str, update: str, lr: float) -> dict[str, Any]:
    """N simulated training steps of block ``index`` on the export's training vectors."""
    from ctxconv.firmware_sim.ondevice.geometry import trainable_names

    raw, labels = int8.train_vectors()
    raw_test, labels_test = int8.test_vectors()
    block = block_from_export(init, index)
    prefix = FrozenPrefix(int8, index)
    x, x_test = prefix(raw), prefix(raw_test)  # int8 prefix, dequantized
    opt = make_optimizer(optimizer, lr)
    names = trainable_names(block.geom, update)
    rng = np.random.default_rng(0)
    before = accuracy(block, x_test, labels_test)
    losses = []
    t0 = time.perf_counter()
    for s in range(steps):
        idx = (np.arange(batch) + s * batch) % len(labels)
        y = labels[idx].astype(np.int64)
        neg = wrong_labels(y, block.geom.num_classes, rng) if objective == "bce" else None
        losses.append(local_step(block, opt, x[idx], y, objective, names, neg, lr=lr).loss)
    host_ms = 1e3 * (time.perf_counter() - t0) / steps
    window = max(1, steps // 10)  # single-batch losses are noisy: average a tenth of the run
    return {"steps": steps, "loss_window": window,
            "first_loss": float(np.mean(losses[:window])),
            "last_loss": float(np.mean(losses[-window:])),
            "accuracy_before": before, "accuracy_after": accuracy(block, x_test, labels_test),
            "host_ms_per_step": host_ms, "init": str(init.path.name),
            "data": "export training vectors; accuracy on the test vectors"}


def report(int8: ExportBundle, mcu: str, batch: int, optimizer: str, objective: str,
           update: str) -> dict[str, Any]:
    profile = load_profile(mcu)
    model = ExportModel(geometries(int8), int8.graphs, [len(b) for b in int8.tflite], int8.tflite)
    n = len(model.geoms)
    blocks = [block_report(model, i, profile, batch, optimizer, objective, update)
              for i in range(n)]
    per_profile: dict[str, list[int]] = {}
    for name in list_profiles():
        p = load_profile(name)
        per_profile[name] = [block_report(model, i, p, batch, optimizer, objective,
                                          update)["largest_batch"] for i in range(n)]
    alternatives = {m: [block_report(model, i, profile, 1, optimizer, objective, m)["sram_bytes"]
                        for i in range(n)] for m in sorted(UPDATE_MODES)}
    return {"export": str(int8.path), "mcu": profile.name, "batch": batch,
            "optimizer": optimizer, "objective": objective, "update": update,
            "blocks": blocks, "largest_batch_per_profile": per_profile,
            "sram_at_batch1_by_update": alternatives,
            "backprop": backprop_report(model, profile, batch, optimizer, objective),
            "fits": all(b["fits"] for b in blocks)}


def format_table(rep: dict[str, Any]) -> str:
    b0 = rep["batch"]
    lines = [f"forward-only training on {rep['mcu']} (batch {b0}, {rep['optimizer']}, "
             f"{rep['objective']}, update {rep['update']})",
             f"{'block':>5} {'trained':>9} {'SRAM KB':>9} {'avail KB':>9} {'flash KB':>9} "
             f"{'max batch':>9} {'fp32 MMAC':>10} {'ms/step':>10}  verdict"]
    for b in rep["blocks"]:
        verdict = "fits" if b["fits"] else "DOES NOT FIT (" + ", ".join(
            k for k, ok in (("SRAM", b["fits_sram"]), ("flash", b["fits_flash"])) if not ok) + ")"
        lines.append(f"{b['block']:>5} {b['trained_params']:>9,} {b['sram_bytes'] / KB:>9.1f} "
                     f"{b['available_sram_bytes'] / KB:>9.1f} {b['flash_bytes'] / KB:>9.1f} "
                     f"{b['largest_batch']:>9} {b['fp32_macs']['total'] / 1e6:>10.2f} "
                     f"{b['ms_per_step']:>10.1f}  {verdict}")
    bp = rep["backprop"]
    worst = max(b["sram_bytes"] for b in rep["blocks"])
    lines += [f"backprop through the whole network: SRAM {bp['sram_bytes'] / KB:.1f} KB "
              f"({bp['sram_bytes'] / worst:.2f}x the largest forward-only block), max batch "
              f"{bp['largest_batch']}, {bp['fp32_macs']['total'] / 1e6:.2f} MMAC, "
              f"{bp['ms_per_step']:.1f} ms/step, {'fits' if bp['fits_sram'] else 'does not fit'}",
              "largest training batch per profile and block (0: not even batch 1 fits):",
              *(f"  {p:<10} " + ", ".join(f"block {i} {v}" for i, v in enumerate(vals))
                for p, vals in rep["largest_batch_per_profile"].items()),
              "SRAM KB at batch 1 by --update: " + "; ".join(
                  f"{m} " + "/".join(f"{v / KB:.1f}" for v in vals)
                  for m, vals in rep["sram_at_batch1_by_update"].items())]
    for b in rep["blocks"]:
        if "steps" in b:
            s = b["steps"]
            lines.append(f"block {b['block']}: {s['steps']} simulated steps, loss (mean of the "
                         f"first / last {s['loss_window']} steps) {s['first_loss']:.4f} -> "
                         f"{s['last_loss']:.4f}, accuracy on the test "
                         f"vectors {s['accuracy_before']:.2%} -> {s['accuracy_after']:.2%} "
                         f"({s['host_ms_per_step']:.1f} host ms/step, init {s['init']})")
    for b in rep["blocks"]:
        if not b["fits_sram"]:
            big = sorted(b["buffers"], key=lambda x: -x["bytes"])[:3]
            lines.append(f"block {b['block']} needs {b['sram_bytes']:,} B of SRAM, "
                         f"{b['available_sram_bytes']:,} B available; largest buffers: "
                         + ", ".join(f"{x['name']} {x['bytes']:,} B" for x in big))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.batch < 1 or args.steps < 0 or not args.lr > 0:
        print("error: --batch must be >= 1, --steps >= 0 and --lr > 0", file=sys.stderr)
        return EXIT_ERROR
    try:
        int8, init = _bundles(Path(args.export_dir), args.float_export)
        rep = report(int8, args.mcu, args.batch, args.optimizer, args.objective, args.update)
        if args.steps:
            for b in rep["blocks"]:
                b["steps"] = run_steps(int8, init, b["block"], args.steps, args.batch,
                                       args.optimizer, args.objective, args.update, args.lr)
    except (ModelFileError, ValueError, OSError) as exc:
        return report_error(exc, EXIT_ERROR, args.debug)
    print(format_table(rep))
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(rep, indent=2))
    if not rep["fits"]:
        print(f"error: not every block can be trained on {rep['mcu']} at batch {args.batch}",
              file=sys.stderr)
        return EXIT_DOES_NOT_FIT
    return 0


if __name__ == "__main__":
    sys.exit(main())
