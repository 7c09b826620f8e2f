"""Whole-block on-device training with int8 weights updated in place: writes the
"On-device training, int8 in place" section of BENCHMARKS.md.

    python benchmarks/ondevice_int8_bench.py [DIGITS_EXPORT [FASHION_EXPORT]]
    # defaults: benchmarks/runs/digits/export (trained and exported with the CLIs when
    # missing) and benchmarks/runs/fashion_mnist/export (skipped when missing)
    python benchmarks/ondevice_int8_bench.py --render   # markdown from the stored JSON only

Per export and block on the nRF52840: SRAM at batch 1 and 8, where the changing weights
live (SRAM, or flash pages rewritten each step), flash, largest batch, MACs and estimated
ms per step; digits trained from scratch block by block in the simulator (test accuracy,
simulated device time); one block trained in C on the emulated Cortex-M4 against the
simulator (bit-exactness, measured RAM and instructions beside the planner); and block 0
trained from scratch in C on the emulated Cortex-M4 for the simulator's epochs (test
accuracy of the weights the C returned, instructions emulated, simulated device time).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a path: the repository

from benchmarks.provenance import relative
from benchmarks.report import provenance_line, start, write_section
from ctxconv.blockgraph.bundle import load_export
from ctxconv.ondevice import ExportModel, geometries
from ctxconv.ondevice.c_check import check_training
from ctxconv.ondevice.inplace import inplace_report
from ctxconv.ondevice.scratch import train_blocks
from ctxconv.runtimes.firmware.toolchain import missing_arm_tools
from ctxconv.sim.profiles import load_profile

KB = 1024
MCU = "nrf52840"
EPOCHS, BATCH, LR, SEED = 3, 8, 0.05, 0
SEEDS = (0, 1, 2)  # the from-scratch accuracy is reported as mean +- std over these
FW_STEPS, FW_BATCH = 2, 4


def ensure_digits(export_dir: Path) -> Path:
    """The embedded default trained and exported with the CLIs when missing."""
    if not (export_dir / "manifest.json").is_file():
        run = export_dir.parent
        subprocess.run(["ctxconv-train", f"hydra.run.dir={run}", "overwrite=true"], check=True)
        subprocess.run(["ctxconv-export", str(run), "--int8", "--out", str(export_dir)],
                       check=True)
    return export_dir


def accounting(export_dir: Path) -> list[dict]:
    bundle = load_export(export_dir)
    model = ExportModel(geometries(bundle), bundle.graphs, [len(b) for b in bundle.tflite],
                        bundle.tflite)
    p = load_profile(MCU)
    rows = []
    for i in range(len(model.geoms)):
        r1, r8 = inplace_report(model, i, p, 1), inplace_report(model, i, p, 8)
        rows.append({"block": i, "params": r1["trained_params"], "store_b1": r1["store"],
                     "store_b8": r8["store"], "sram_b1": r1["sram_bytes"],
                     "sram_b8": r8["sram_bytes"], "available": r1["available_sram_bytes"],
                     "flash": r1["flash_bytes"], "largest_batch": r1["largest_batch"],
                     "ms_b1": r1["ms_per_step"], "ms_b8": r8["ms_per_step"],
                     "pages_b1": r1["flash_pages_written_per_step"],
                     "flash_write_ms_b1": r1["flash_write_ms_per_step"],
                     "endurance_steps": r1["max_steps_by_endurance"],
                     "macs_b1": r1["macs"], "fits_b1": r1["fits"],
                     "buffers_b1": r1["buffers"]})
    return rows


def one_block(rep: dict) -> dict:
    """A one-block ``check_training`` report as this section stores it: the block's record,
    with the run's figures (target, RAM, flash) merged into its host and emulated parts."""
    b = dict(rep["blocks"][0])
    for where in ("host", "emulated"):
        if b.get(where) and rep.get(where):
            b[where] = {**rep[where], **b[where]}
    return b


def table(name: str, rows: list[dict]) -> list[str]:
    out = [f"**{name}** (nRF52840, {rows[0]['available'] / KB:.0f} KB SRAM available):", "",
           "| block | params (all trained) | weights live in (b=1 / b=8) | SRAM b=1 KB | "
           "SRAM b=8 KB | flash KB | largest batch | MMAC b=1 | ms/step b=1 | ms/step b=8 |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        macs = (r["macs_b1"]["int8_macs"] + r["macs_b1"]["fp32_macs"]) / 1e6
        out.append(f"| {r['block']} | {r['params']:,} | {r['store_b1']} / {r['store_b8']} | "
                   f"{r['sram_b1'] / KB:.1f} | {r['sram_b8'] / KB:.1f} | {r['flash'] / KB:.1f} "
                   f"| {r['largest_batch']} | {macs:.2f} | {r['ms_b1']:.1f} | {r['ms_b8']:.1f} |")
    ok = all(r["fits_b1"] for r in rows)
    out += ["", f"- every block, all weights, trainable at batch 1: **{'yes' if ok else 'no'}**"]
    for r in rows:
        if r["store_b1"] == "flash":
            out.append(f"- block {r['block']}: its int8 weights do not fit SRAM beside the step's "
                       f"buffers, so they stay in flash: {r['pages_b1']} pages of 4 KB erased and "
                       f"rewritten per step ({r['flash_write_ms_b1']:.0f} ms of the step, "
                       f"nRF52840 maxima), flash endurance {r['endurance_steps']:,} steps")
    return out


def main() -> None:
    if (started := start(__doc__, "ondevice_int8", render,
                         digits_export="benchmarks/runs/digits/export",
                         fashion_export="benchmarks/runs/fashion_mnist/export")) is None:
        return
    args, stamp = started
    digits = ensure_digits(Path(args.digits_export))
    fashion = Path(args.fashion_export)
    t0 = time.perf_counter()
    res: dict = {"digits": accounting(digits)}
    if (fashion / "manifest.json").is_file():
        res["fashion_mnist"] = accounting(fashion)
    ts = time.perf_counter()
    res["from_scratch"] = train_blocks(load_export(digits), EPOCHS, BATCH, LR, SEED, True)
    res["from_scratch"]["wall_seconds"] = round(time.perf_counter() - ts, 1)
    for b, acc in zip(res["from_scratch"]["blocks"], res["digits"], strict=True):
        b["device_seconds"] = b["steps"] * acc["ms_b8"] / 1e3
    res["from_scratch_seeds"] = {
        seed: train_blocks(load_export(digits), EPOCHS, BATCH, LR, seed, True)["test_accuracy"]
        for seed in SEEDS}
    missing = missing_arm_tools()
    res["firmware"] = []
    if missing is None:
        bundle = load_export(digits)
        for index, scratch in ((0, True), (1, False)):
            res["firmware"].append(one_block(check_training(
                bundle, index, load_profile(MCU), FW_STEPS, FW_BATCH, LR, SEED,
                from_scratch=scratch)))
        tf = time.perf_counter()
        run = one_block(check_training(bundle, 0, load_profile(MCU), batch=BATCH, lr=LR,
                                       seed=SEED, from_scratch=True, epochs=EPOCHS))
        run["wall_seconds"] = round(time.perf_counter() - tf, 1)
        for part in (run["simulator"], run["host"], run["emulated"]):
            part.pop("losses", None)  # per-step lists: the windows summarise them
            part.pop("correct", None)
        run["block_by_block_test_accuracy"] = res["from_scratch"]["blocks"][0][
            "test_accuracy_block"]
        res["firmware_learning"] = run
    res.update(provenance=stamp, wall_seconds=round(time.perf_counter() - t0, 1),
               digits_export=relative(str(digits)), fashion_export=relative(str(fashion)),
               missing_tools=missing)
    write_section("ondevice_int8", res, render(res))


def render(res: dict) -> list[str]:
    lines = ["## On-device training, all weights int8 in place (`benchmarks/ondevice_int8_bench.py`)",
             "", provenance_line(res.get("provenance")), "",
             f"Run time: {res['wall_seconds']:.0f} s. `ctxconv-sim-train EXPORT --weights int8`: "
             "every weight of the block stays int8 (per-output-channel scale) and is updated in "
             "place one output channel, then one head row, at a time: that channel's gradient "
             "(k*k*Cin floats, the only gradient buffer) from the kept int8 batch of block "
             "inputs, ReLU masks (bits) and pooled grid; plain SGD (no state) with "
             "quantization-aware scaling (Lin et al., NeurIPS 2022) and stochastic rounding; "
             "a channel that outgrows int8 gets a larger scale. The weights that change live in "
             "SRAM (counted) when they fit beside the step's buffers, else in flash, rewritten "
             "page by page each step (page buffer counted in SRAM, erase/program time in the "
             "step). Time: int8 conv MACs at the profile's int8 cost, float MACs at its float32 "
             "cost (estimates, `ctxconv/sim/mcu/*.yaml`).", ""]
    lines += table("digits (embedded default)", res["digits"])
    if "fashion_mnist" in res:
        lines += [""] + table("Fashion-MNIST", res["fashion_mnist"])
    else:
        lines += ["", f"Fashion-MNIST: no export at {res['fashion_export']} when this ran."]
    fs = res["from_scratch"]
    lines += ["", f"**Digits trained from scratch in the simulator** (int8 weights throughout, "
              f"{EPOCHS} epochs per block, batch {BATCH}, lr {LR}, the export's "
              f"{fs['train_images']} training vectors, {fs['test_images']} test vectors; host "
              f"{fs['wall_seconds']:.0f} s):", ""]
    for b in fs["blocks"]:
        lines.append(f"- block {b['block']}: loss {b['first_loss']:.3f} -> {b['last_loss']:.3f}, "
                     f"test accuracy of the block {b['test_accuracy_block']:.2%}, summed over "
                     f"blocks {b['test_accuracy_summed']:.2%}; simulated nRF52840 time "
                     f"{b['device_seconds']:.0f} s ({b['steps']} steps)")
    lines.append(f"- test accuracy of the model trained on the device: **{fs['test_accuracy']:.2%}**"
                 f" (seed {SEED})")
    seeds = res.get("from_scratch_seeds")
    if seeds:
        accs = np.array(list(seeds.values()))
        lines.append(f"- over seeds {', '.join(map(str, seeds))} (the same command with `--seed`): "
                     f"**{accs.mean():.2%} ± {accs.std(ddof=1):.2%}** (mean ± std; per seed "
                     + ", ".join(f"{a:.2%}" for a in accs) + ")")
    if res["firmware"]:
        lines += ["", f"**Training step in C on the emulated MCU** (`harness/ctxconv_train.c`, "
                  f"{FW_STEPS} steps of batch {FW_BATCH} on the export's training vectors, frozen "
                  "prefix through the generated library; tolerance: int8 weights bit-exact, "
                  "float32 scales, biases and loss max relative error <= 1e-5):", "",
                  "| block | init | target | int8 weights | max rel. error | RAM measured KB "
                  "| planner SRAM KB | instructions / step | planner cycles / step |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for f in res["firmware"]:
            e = f["emulated"]
            lines.append(f"| {f['block']} | {'random' if f['from_scratch'] else 'export'} | "
                         f"{e['target']} | {'bit-exact' if e['int8_bit_exact'] else 'differ'} | "
                         f"{e['max_rel_error']:.1e} | {e['ram_bytes'] / KB:.1f} | "
                         f"{e['modelled_sram_bytes'] / KB:.1f} | {e['instructions_per_step']:,} "
                         f"| {e['modelled_cycles_per_step']:,} |")
        lines += ["", "RAM measured = static data of the binary (library arena, the step's "
                  "buffers, the trained weights) + painted-stack high-water mark. The C step is "
                  "plain scalar code (no SIMD), so it executes more instructions than the "
                  "planner's cycle estimate, which assumes CMSIS-NN-class int8 kernels."]
    else:
        lines += ["", f"Training step in C: not run ({res.get('missing_tools')})."]
    fl = res.get("firmware_learning")
    if fl:
        e, h, sim = fl["emulated"], fl["host"], fl["simulator"]
        same = "yes" if (e["test_accuracy_equal"] and e["int8_bit_exact"]
                         and e["test_accuracy"] == fl["block_by_block_test_accuracy"]) else "NO"
        lines += ["", f"**Block 0 learned from scratch in C on the emulated MCU** "
                  f"(`check_training(..., epochs={fl['epochs']})`, the CLI's `--firmware-block 0 "
                  f"--firmware-epochs {fl['epochs']} --from-scratch`): {fl['epochs']} epochs "
                  f"over the export's {fl['train_images']} training vectors, batch "
                  f"{fl['batch']}, lr {fl['lr']}, shuffled exactly as the simulator's "
                  f"block-by-block run above; the final int8 weights, scales and biases the "
                  f"C returned are evaluated with the simulator's numpy int8 block evaluation "
                  f"on the {fl['test_images']} test vectors (host {fl['wall_seconds']:.0f} s):",
                  "",
                  "| trained by | steps | loss (first / last tenth) | test accuracy of block 0 "
                  "| int8 weights vs simulator |",
                  "|---|---|---|---|---|",
                  f"| simulator (numpy) | {fl['steps']} | {sim['first_loss']:.3f} / "
                  f"{sim['last_loss']:.3f} | {sim['test_accuracy']:.2%} | - |",
                  f"| C, host build | {fl['steps']} | {h['first_loss']:.3f} / "
                  f"{h['last_loss']:.3f} | {h['test_accuracy']:.2%} | "
                  f"{'bit-exact' if h['int8_bit_exact'] else 'differ'} |",
                  f"| C, {e['target']} under QEMU | {fl['steps']} | {e['first_loss']:.3f} / "
                  f"{e['last_loss']:.3f} | {e['test_accuracy']:.2%} | "
                  f"{'bit-exact' if e['int8_bit_exact'] else 'differ'} |",
                  "",
                  f"- initial (random) block: {fl['test_accuracy_initial']:.2%}; the simulator's "
                  f"block-by-block run: {fl['block_by_block_test_accuracy']:.2%}; identical to "
                  f"the emulated firmware's: **{same}**",
                  f"- emulated: {e['instructions_total']:,} instructions for the {fl['steps']} "
                  f"steps ({e['instructions_per_step']:,} per training step, median, + "
                  f"{e['prefix_instructions_per_image']:,} per image for the input and the "
                  f"frozen prefix) -> "
                  f"simulated nRF52840 time >= **{e['device_seconds_lower_bound']:.1f} s** at "
                  f"{e['clock_hz'] / 1e6:.0f} MHz (one cycle per instruction, a lower bound for "
                  f"this scalar build); the planner's estimate "
                  f"{fl['planned']['ms_per_step']:.1f} ms/step x {fl['steps']} = "
                  f"{fl['planned_device_seconds']:.1f} s (CMSIS-NN-class int8 kernels)"]
    return lines + [""]


if __name__ == "__main__":
    main()
