"""The exported C library learning on the emulated Cortex-M4: writes the "On-device learning
in the exported library" section of BENCHMARKS.md.

    python benchmarks/ondevice_c_bench.py [DIGITS_EXPORT]
    python benchmarks/ondevice_c_bench.py --render   # markdown from the stored JSON only

Digits from scratch, every block trained by the library's own C (``c/ctxconv_train.c``:
``ctxconv_train_reinit``, then the labelled training vectors fed one at a time, a step per
full batch, update set ``all``), block 0 then block 1 on block 0's features as the library
holds them, on QEMU ``mps2-an386`` (Cortex-M4F), compared bit for bit with the simulator;
then ``ctxconv_classify`` with the learned weights. The learning rate is chosen on held-out
data: the simulator (bit-exact with the C, so choosing there is choosing for the C) trains
on the first 800 of the export's 1000 training vectors and is scored on the other 200, per
candidate and seed; the test vectors are read once per seed, by the final runs.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a path: the repository

from benchmarks.ondevice_int8_bench import ensure_digits
from benchmarks.provenance import relative
from benchmarks.report import provenance_line, start, write_section
from ctxconv.blockgraph.bundle import load_export
from ctxconv.ondevice.c_check import (
    check_training,
    pipeline_accuracy,
    reference_pipeline,
    simulate_blocks,
)
from ctxconv.sim.profiles import load_profile

KB = 1024
MCU = "nrf52840"
EPOCHS, BATCH, SEEDS = 3, 8, (0, 1, 2)
LR_CANDIDATES = (0.02, 0.05, 0.1)
HELD_OUT = 200  # of the export's training vectors, for the choice of the learning rate
TARGET = 0.95


def choose_lr(bundle, profile) -> dict:
    """Validation accuracy of the simulator's run per candidate learning rate and seed."""
    raw, y = bundle.train_vectors()
    fit, val = slice(0, len(y) - HELD_OUT), slice(len(y) - HELD_OUT, len(y))
    blocks = list(range(len(bundle.graphs)))
    scores = {}
    for lr in LR_CANDIDATES:
        accs = []
        for seed in SEEDS:
            _, graphs = simulate_blocks(bundle, blocks, profile, raw[fit], y[fit],
                                        (raw[val][:0], y[val][:0]), 1, BATCH, lr, seed,
                                        "stochastic", True, EPOCHS, "all")
            accs.append(pipeline_accuracy(reference_pipeline(bundle, graphs), raw[val],
                                          y[val].astype(np.int64)))
        scores[str(lr)] = accs
    best = max(LR_CANDIDATES, key=lambda lr: float(np.mean(scores[str(lr)])))
    return {"validation_accuracy": scores, "lr": best, "fit_images": len(y) - HELD_OUT,
            "held_out_images": HELD_OUT}


def summary(rep: dict, wall: float) -> dict:
    """What this section keeps of one seed's ``check_training`` report."""
    e = rep["emulated"]
    keep = {k: e[k] for k in ("target", "flash_bytes", "static_ram_bytes",
                              "training_buffers_ram_bytes", "stack_high_water_bytes",
                              "ram_bytes", "bit_exact", "scores_bit_exact",
                              "pipeline_test_accuracy")}
    blocks = []
    for b in rep["blocks"]:
        m = b["emulated"]
        blocks.append({"block": b["block"], "steps": b["steps"], "int8_params": b["int8_params"],
                       "first_loss": m["first_loss"], "last_loss": m["last_loss"],
                       "int8_bit_exact": m["int8_bit_exact"],
                       "inference_params_bit_exact": m["inference_params_bit_exact"],
                       "test_accuracy_block": m["test_accuracy"],
                       "simulator_test_accuracy_block": b["simulator"]["test_accuracy"],
                       "instructions_per_step": m["instructions_per_step"],
                       "instructions_per_sample": m["instructions_per_sample"],
                       "prefix_instructions_per_image": m["prefix_instructions_per_image"],
                       "instructions_total": m["instructions_total"],
                       "device_seconds_lower_bound": m["device_seconds_lower_bound"],
                       "planned_ms_per_step": b["planned"]["ms_per_step"],
                       "planned_sram_bytes": b["planned"]["sram_bytes"]})
    return {**keep, "blocks": blocks, "host_bit_exact": rep["host"]["bit_exact"],
            "simulator_pipeline_test_accuracy": rep["simulator_pipeline_test_accuracy"],
            "eval_images": rep["eval_images"], "train_images": rep["blocks"][0]["train_images"],
            "test_images": rep["blocks"][0]["test_images"], "wall_seconds": round(wall, 1)}


def main() -> None:
    if (started := start(__doc__, "ondevice_c", render,
                         digits_export="benchmarks/runs/digits/export")) is None:
        return
    args, stamp = started
    digits = ensure_digits(Path(args.digits_export))
    bundle, profile = load_export(digits), load_profile(MCU)
    t0 = time.perf_counter()
    choice = choose_lr(bundle, profile)
    runs = {}
    for seed in SEEDS:
        ts = time.perf_counter()
        rep = check_training(bundle, "all", profile, batch=BATCH, lr=choice["lr"], seed=seed,
                             from_scratch=True, epochs=EPOCHS, eval_images=32)
        runs[str(seed)] = summary(rep, time.perf_counter() - ts)
        print(f"seed {seed}: {runs[str(seed)]['pipeline_test_accuracy']:.2%}", flush=True)
    res = {"choice": choice, "runs": runs, "epochs": EPOCHS, "batch": BATCH,
           "host_trained_int8_accuracy": bundle.manifest["run_check"]["modes"][
               bundle.manifest["modes"][0]]["measured"],
           "digits_export": relative(str(digits)), "provenance": stamp,
           "wall_seconds": round(time.perf_counter() - t0, 1)}
    write_section("ondevice_c", res, render(res))


def render(res: dict) -> list[str]:
    ch, runs = res["choice"], res["runs"]
    accs = np.array([r["pipeline_test_accuracy"] for r in runs.values()])
    first = next(iter(runs.values()))
    exact = all(r["bit_exact"] and r["host_bit_exact"] for r in runs.values())
    met = accs.mean() >= TARGET
    lines = ["## On-device learning in the exported library (`benchmarks/ondevice_c_bench.py`)",
             "", provenance_line(res.get("provenance")), "",
             f"Run time: {res['wall_seconds']:.0f} s. Digits from scratch: every block trained "
             f"by the export's own C library (`c/ctxconv_train.c`, built with "
             f"`-DCTXCONV_TRAIN_BLOCKS=0x3u`) on {first['target']} under QEMU: "
             "`ctxconv_train_reinit`, then the export's "
             f"{first['train_images']} labelled training vectors fed one at a time "
             f"({res['epochs']} shuffled epochs per block, batch {res['batch']}, update set "
             "`all`, stochastic rounding), block 0 then block 1 on block 0's features as the "
             "library holds them; then `ctxconv_classify` with the weights it learned (no "
             f"re-export) on the {first['test_images']} test vectors. Each seed's run is "
             "compared with the simulator's bit for bit (int8 weights, recomputed inference "
             f"parameters, and class scores of {first['eval_images']} test vectors).", "",
             f"Learning rate chosen on held-out data (the simulator on {ch['fit_images']} "
             f"training vectors, scored on the other {ch['held_out_images']}; mean over seeds "
             f"{', '.join(runs)}): " + ", ".join(
                 f"{lr}: {np.mean(v):.2%}" for lr, v in ch["validation_accuracy"].items())
             + f" -> **lr {ch['lr']}**.", "",
             "| seed | test accuracy (int8, C-learned weights) | bit-exact with the simulator "
             "(host / emulated) | block 0 loss first -> last tenth | block 1 loss |",
             "|---|---|---|---|---|"]
    for seed, r in runs.items():
        b0, b1 = r["blocks"]
        lines.append(f"| {seed} | {r['pipeline_test_accuracy']:.2%} | "
                     f"{'yes' if r['host_bit_exact'] else 'NO'} / "
                     f"{'yes' if r['bit_exact'] else 'NO'} | {b0['first_loss']:.3f} -> "
                     f"{b0['last_loss']:.3f} | {b1['first_loss']:.3f} -> {b1['last_loss']:.3f} |")
    lines += ["", f"- **{accs.mean():.2%} ± {accs.std(ddof=1):.2%}** (mean ± std over seeds "
              f"{', '.join(runs)}; target ≥ {TARGET:.0%}: **{'met' if met else 'missed'}**); "
              f"every run bit-exact with the simulator: **{'yes' if exact else 'NO'}**.",
              f"- Anchor: the same architecture trained on the host by `ctxconv-train` "
              f"(forward-only, the full digits training split, float) and exported int8: "
              f"{res['host_trained_int8_accuracy']:.2%} on the same test vectors. The device "
              f"learns from the {first['train_images']} calibration images only.", "",
              f"Measured on the binary (seed {next(iter(runs))}; {first['target']}):", "",
              "| block | int8 params | steps | instructions / step (median) | per sample | "
              "frozen prefix / image | emulated instructions | device time at 64 MHz "
              "(lower bound) | planner ms / step |",
              "|---|---|---|---|---|---|---|---|---|"]
    for b in first["blocks"]:
        lines.append(f"| {b['block']} | {b['int8_params']:,} | {b['steps']} | "
                     f"{b['instructions_per_step']:,} | {b['instructions_per_sample']:,} | "
                     f"{b['prefix_instructions_per_image']:,} | {b['instructions_total']:,} | "
                     f"{b['device_seconds_lower_bound']:.1f} s | {b['planned_ms_per_step']:.1f} |")
    lines += ["", f"RAM of the training build: {first['ram_bytes'] / KB:.1f} KB measured "
              f"(static {first['static_ram_bytes'] / KB:.1f} KB from the ELF: both blocks' int8 "
              f"weights and parameters, their float32 state, the arena and the step's buffers "
              f"({first['training_buffers_ram_bytes'] / KB:.1f} KB); stack high-water mark "
              f"{first['stack_high_water_bytes']} B painted); flash "
              f"{first['flash_bytes'] / KB:.1f} KB. Device time counts one cycle per "
              "instruction: a lower bound, not a cycle estimate. The step is scalar C "
              "(float32 on the M4F's FPU); it does not yet use the SMLAD inference kernels "
              "for its forward part."]
    return lines


if __name__ == "__main__":
    main()
