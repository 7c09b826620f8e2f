"""On-device training benchmark: writes the "On-device training" section of BENCHMARKS.md.

    python benchmarks/ondevice_train_bench.py [EXPORT_DIR]
    # default: benchmarks/runs/fashion_mnist/export (int8); the float export beside it
    # (export-float) is created with `ctxconv-export RUN --out ...` when missing
    python benchmarks/ondevice_train_bench.py --render   # markdown from the stored JSON only

Per block and MCU profile: forward-only training SRAM at batch 1 and 8 (buffers placed by
TFLM's greedy planner), the largest batch that fits, estimated ms per step, and the
backprop / forward-only memory ratio; then whether every block is trainable within the
nRF52840's 256 KB at batch >= 1, for each --update mode.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a path: the repository

from benchmarks.provenance import relative
from benchmarks.report import provenance_line, start, write_section
from ctxconv.blockgraph.bundle import load_export
from ctxconv.ondevice import (
    ExportModel,
    backprop_report,
    block_report,
    geometries,
)
from ctxconv.sim.profiles import list_profiles, load_profile

OPTIMIZER = "sgd"
UPDATES = ("all", "head", "bias")
KB = 1024


def ensure_float_export(export_dir: Path) -> Path:
    """RUN/export-float beside RUN/export, created with ctxconv-export when missing."""
    float_dir = export_dir.parent / "export-float"
    if not (float_dir / "manifest.json").is_file():
        subprocess.run(["ctxconv-export", str(export_dir.parent), "--out", str(float_dir)],
                       check=True)
    return float_dir


def measure(export_dir: Path) -> dict:
    bundle = load_export(export_dir)
    model = ExportModel(geometries(bundle), bundle.graphs, [len(b) for b in bundle.tflite],
                        bundle.tflite)
    rows = []
    for name in list_profiles():
        p = load_profile(name)
        for update in UPDATES:
            bp1 = backprop_report(model, p, 1, OPTIMIZER)
            bp8 = backprop_report(model, p, 8, OPTIMIZER)
            for i in range(len(model.geoms)):
                r1 = block_report(model, i, p, 1, OPTIMIZER, update=update)
                r8 = block_report(model, i, p, 8, OPTIMIZER, update=update)
                rows.append({
                    "mcu": name, "update": update, "block": i,
                    "trained_params": r1["trained_params"],
                    "sram_b1": r1["sram_bytes"], "sram_b8": r8["sram_bytes"],
                    "available_sram": r1["available_sram_bytes"], "flash": r1["flash_bytes"],
                    "fits_flash": r1["fits_flash"], "largest_batch": r1["largest_batch"],
                    "ms_per_step_b1": r1["ms_per_step"], "ms_per_step_b8": r8["ms_per_step"],
                    "backprop_sram_b1": bp1["sram_bytes"], "backprop_sram_b8": bp8["sram_bytes"],
                    "backprop_over_fo_b8": bp8["sram_bytes"] / r8["sram_bytes"],
                    "buffers_b1": r1["buffers"],
                })  # fmt: skip
    return {"rows": rows, "blocks": len(model.geoms),
            "geometry": [g.__dict__ for g in model.geoms],
            "backprop_nrf52840_b1": backprop_report(model, load_profile("nrf52840"), 1,
                                                    OPTIMIZER)}


def markdown(res: dict) -> list[str]:
    lines = ["| MCU | update | block | trained params | SRAM b=1 KB | SRAM b=8 KB | available KB "
             "| flash KB | largest batch | ms/step b=1 | ms/step b=8 | backprop / FO (b=8) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        lines.append(f"| {r['mcu']} | {r['update']} | {r['block']} | {r['trained_params']:,} | "
                     f"{r['sram_b1'] / KB:.1f} | {r['sram_b8'] / KB:.1f} | "
                     f"{r['available_sram'] / KB:.0f} | {r['flash'] / KB:.1f}"
                     f"{'' if r['fits_flash'] else ' (too big)'} | {r['largest_batch']} | "
                     f"{r['ms_per_step_b1']:.1f} | {r['ms_per_step_b8']:.1f} | "
                     f"{r['backprop_over_fo_b8']:.2f} |")
    lines.append("")
    for update in UPDATES:
        nrf = [r for r in res["rows"] if r["mcu"] == "nrf52840" and r["update"] == update]
        ok = all(r["largest_batch"] >= 1 and r["fits_flash"] for r in nrf)
        worst = max(nrf, key=lambda r: r["sram_b1"])
        big = sorted(worst["buffers_b1"], key=lambda b: -b["bytes"])[:3]
        lines.append(f"- nRF52840 (256 KB), --update {update}: every block trainable at batch >= 1: "
                     f"**{'yes' if ok else 'no'}**; largest need block {worst['block']} "
                     f"{worst['sram_b1'] / KB:.1f} KB at batch 1 of "
                     f"{worst['available_sram'] / KB:.0f} KB available (largest buffers: "
                     + ", ".join(f"{b['name']} {b['bytes'] / KB:.1f} KB" for b in big) + ").")
    bp = res["backprop_nrf52840_b1"]
    lines.append(f"- Backprop through the whole network on nRF52840 at batch 1: "
                 f"{bp['sram_bytes'] / KB:.1f} KB ({'fits' if bp['fits_sram'] else 'does not fit'}).")
    return lines


def main() -> None:
    if (started := start(__doc__, "ondevice_train", render,
                         export_dir="benchmarks/runs/fashion_mnist/export")) is None:
        return
    args, stamp = started
    export_dir = Path(args.export_dir)
    float_dir = ensure_float_export(export_dir)
    t0 = time.perf_counter()
    res = measure(export_dir)
    res.update(provenance=stamp, wall_seconds=round(time.perf_counter() - t0, 1),
               export=relative(str(export_dir)), float_export=relative(str(float_dir)),
               optimizer=OPTIMIZER)
    write_section("ondevice_train", res, render(res))


def render(res: dict) -> list[str]:
    return ["## On-device training (`benchmarks/ondevice_train_bench.py`)", "",
            provenance_line(res.get("provenance")), "",
            f"Planner run: {res['wall_seconds']:.1f} s. Forward-only training of one block at a "
            f"time ({res['optimizer']} with momentum, softmax objective): earlier blocks frozen "
            "and run int8 from flash, the trained block in float32 (weights, gradients, optimizer "
            "state, per-image im2col, batch ReLU masks, pooled grid, scores), every buffer "
            "placed by TFLM's greedy planner over the steps of one training step "
            "(`ctxconv/memory/training.py`). Time: the frozen prefix's int8 "
            "cycles plus float32 MACs x each profile's `cost.fp32_cycles_per_mac` (estimates, "
            "see `ctxconv/sim/mcu/*.yaml`). Backprop: the same model trained end to end "
            "(all weights, gradients, optimizer state, every block output kept for backward). "
            "`--update head|bias` trains only the goodness head or the biases; the rest stays "
            "int8 in flash.", "", *markdown(res), ""]


if __name__ == "__main__":
    main()
