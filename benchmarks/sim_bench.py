"""Simulator benchmark: writes the "On-device inference" section of BENCHMARKS.md.

    python benchmarks/sim_bench.py [EXPORT_DIR]   # default: benchmarks/runs/fashion_mnist/export
    python benchmarks/sim_bench.py --render       # markdown from results/sim.json only

Runs ``ctxconv-bench EXPORT_DIR --mcu all`` (profiles x modes: latency, SRAM, flash,
accuracy on the whole test set, fit), and sets the planner's arena beside TFLM's measured
minimum and ctxconv's own in-place plan, per block.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a path: the repository

from benchmarks.provenance import relative
from benchmarks.report import provenance_line, start, write_section
from ctxconv.sim.bench_cli import markdown, run_bench
from ctxconv.sim.profiles import list_profiles


def main() -> None:
    if (started := start(__doc__, "sim", render,
                         export_dir="benchmarks/runs/fashion_mnist/export")) is None:
        return
    args, stamp = started
    export_dir = Path(args.export_dir)
    t0 = time.perf_counter()
    result = run_bench(str(export_dir), list_profiles(), None)
    wall = time.perf_counter() - t0
    k = len(json.loads((export_dir / "manifest.json").read_text())["dataset"]["class_names"])
    res = {"provenance": stamp, "wall_seconds": round(wall, 1), "bench": result,
           "num_classes": k,
           "bench_command": relative(f"ctxconv-bench {export_dir} --mcu all")}
    write_section("sim", res, render(res))


def render(res: dict) -> list[str]:
    result, k = res["bench"], res["num_classes"]
    rows = result["rows"]
    nrf = next(r for r in rows if r["mcu"] == "nrf52840")
    by_mode = {r["mode"]: r for r in rows if r["mcu"] == "nrf52840"}
    bench_cmd = res.get("bench_command",
                        "ctxconv-bench benchmarks/runs/fashion_mnist/export --mcu all")
    exact = (f"on {nrf['bit_exact_images']} of {nrf['test_vectors']} test vectors"
             if "bit_exact_images" in nrf else "on 16 test vectors")
    lines = ["## On-device inference (`benchmarks/sim_bench.py`)", "",
             provenance_line(res.get("provenance")), "",
             f"Equivalent to `{bench_cmd}` "
             f"({res['wall_seconds']:.0f} s). Latency and energy come from each profile's "
             "documented cycle model (`ctxconv/sim/mcu/*.yaml`), accuracy from the "
             f"simulator's int8 kernels ({tflm_agreement(rows)}) on the whole test set.", "",
             markdown(result), "",
             *arena_table(nrf, exact)]
    return lines + onepass_vs_multipass(by_mode, k)


def tflm_agreement(rows: list[dict]) -> str:
    """What the stored TFLM cross-check says, over every row of the run."""
    checked = [r.get("bit_exact_vs_tflm") for r in rows]
    if None in checked:
        return "not checked against TFLM in every row"
    return "bit-exact with TFLM" if all(checked) else "NOT bit-exact with TFLM in every row"


def arena_table(nrf: dict, exact: str) -> list[str]:
    """Per block: the planner's arena beside TFLM's measured minimum; a record from before the
    C library's one arena (``c_arena_bytes``) carries the own in-place plan per block."""
    kb = 1024
    own = "own_peak_bytes" in nrf["blocks"][0]
    title = "ctxconv's own plan" if own else "the generated C library's arena"
    lines = [f"### Arena: planner vs TFLM's measured minimum vs {title} (nRF52840)", "",
             "TFLM minimum: smallest arena with which the real TFLM interpreter allocates and "
             "invokes the block (bisection, 16-byte steps, each probe in a child process). "
             "Planner: our prediction for the same reference kernels. "
             + ("Own plan: activation peak with RESHAPE as a view and in-place max-pool, no "
                "interpreter overhead." if own else
                "C library: the one static arena the generated C declares for the whole "
                "pipeline, its exact layout (`ctxconv/memory/c_arena.py`)."), "",
             "| block | TFLM min KB | planner KB | planner / TFLM |"
             + (" own plan KB | own / TFLM |" if own else "")
             + f" planned on nRF52840 with CMSIS-NN scratch KB | bit-exact vs TFLM ({exact}) |",
             "|---|---|---|---|" + ("---|---|" if own else "") + "---|---|"]
    for b, lsb in zip(nrf["blocks"], nrf["max_lsb_vs_tflm"], strict=False):
        mine = (f" {b['own_peak_bytes'] / kb:.2f} | {b['own_peak_over_tflm']:.3f} |"
                if own else "")
        lines.append(f"| {b['name']} | {b['tflm_min_arena_bytes'] / kb:.2f} | "
                     f"{b['planned_reference_arena_bytes'] / kb:.2f} | {b['planner_over_tflm']:.3f}"
                     f" |{mine} {b['arena_bytes'] / kb:.2f} | "
                     f"{'yes (0 LSB)' if lsb == 0 else f'{lsb} LSB'} |")
    ratio = (f"Pipeline: own plan peak / TFLM measured arena = **{nrf['own_peak_over_tflm']:.3f}**"
             " (largest block)" if own else
             f"Pipeline: the C library's one arena {nrf['c_arena_bytes'] / kb:.1f} KB / TFLM's "
             f"measured arena of the largest block = **{nrf['c_arena_over_tflm']:.3f}**")
    lines += ["", f"{ratio}. nRF52840 verdict: "
              f"{'fits' if nrf['fits'] else 'does not fit'}, SRAM {nrf['sram_bytes'] / kb:.1f} KB,"
              f" flash {nrf['flash_bytes'] / kb:.1f} KB, estimated latency "
              f"{nrf['latency_ms']:.0f} ms per image.", ""]
    return lines


def onepass_vs_multipass(by_mode: dict, k: int) -> list[str]:
    """The two inference modes side by side, where the export has both."""
    lines: list[str] = []
    if "onepass" in by_mode and "multipass" in by_mode:
        one, multi = by_mode["onepass"], by_mode["multipass"]
        lines += ["### onepass vs multipass", "",
                  f"No block of this model injects the context into its conv, so multipass "
                  f"shares the whole feature pipeline and only evaluates each block's goodness "
                  f"per candidate: MACs multipass / onepass = {multi['macs'] / one['macs']:.3f}, "
                  f"latency ratio {multi['latency_ms'] / one['latency_ms']:.3f}, same top-1 "
                  f"({one['accuracy']:.2%} vs {multi['accuracy']:.2%}). Without sharing, "
                  f"{k} full pipeline runs per image would cost {k}x the MACs "
                  f"({k * one['macs']:,}).", ""]
    return lines


if __name__ == "__main__":
    main()
