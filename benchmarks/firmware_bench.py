"""Firmware benchmark: writes the "Firmware" section of BENCHMARKS.md.

    python benchmarks/firmware_bench.py [EXPORT_DIR]   # default: benchmarks/runs/fashion_mnist/export
    python benchmarks/firmware_bench.py --render       # markdown from results/firmware.json only

The export's generated C library, measured: the host build on every test vector, the
Cortex-M4 (nRF52840) and Cortex-M7 (STM32F746) builds on 20 vectors each under QEMU
(bit-exactness against the host build, the reference kernels and TFLM; flash, RAM, stack and
instructions measured on the binary beside the simulator's model), and the time from the
digits export to 20 emulated images (generation + cross-compile + run).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a path: the repository

from benchmarks.provenance import ROOT, relative
from benchmarks.report import provenance_line, start, write_section
from ctxconv.blockgraph.bundle import load_export
from ctxconv.codegen import write_c_for_export
from ctxconv.runtimes.firmware.build import build_arm
from ctxconv.runtimes.firmware.run import run_harness
from ctxconv.runtimes.firmware.targets import target_for
from ctxconv.sim.firmware_check import block_shapes, fewer_images
from ctxconv.sim.profiles import load_profile
from ctxconv.sim.simulate import SimOptions, simulate

KB = 1024
PROFILES = ("nrf52840", "stm32f746", "rp2040", "nrf5340")


def digits_export() -> Path:
    """The README's default digits model and its int8 export (made once)."""
    run = ROOT / "benchmarks/runs/digits"
    if not (run / "export/manifest.json").exists():
        subprocess.run(["ctxconv-train", f"hydra.run.dir={run}", "overwrite=true",
                        "trainer.progress=false"], check=True)
        subprocess.run(["ctxconv-export", str(run), "--int8"], check=True)
    return run / "export"


def digits_turnaround(export_dir: Path, images: int = 20) -> dict:
    """Seconds from an export to `images` emulated vectors: generate, cross-compile, run."""
    t0 = time.perf_counter()
    write_c_for_export(export_dir)
    t_gen = time.perf_counter()
    bundle = load_export(export_dir)
    profile = load_profile("nrf52840")
    modes = list(bundle.manifest["modes"])
    raw, _ = bundle.test_vectors(images)
    with tempfile.TemporaryDirectory() as tmp:
        build = build_arm(export_dir / "c", Path(tmp), modes, target_for(profile), profile)
        t_build = time.perf_counter()
        run_harness(build.elf, raw, Path(tmp), block_shapes(bundle), bundle.num_classes, modes,
                    False, timeout=600, target=build.target)
    t_run = time.perf_counter()
    return {"images": images, "generate_s": round(t_gen - t0, 2),
            "cross_compile_s": round(t_build - t_gen, 2), "emulate_s": round(t_run - t_build, 2),
            "total_s": round(t_run - t0, 2)}


def main() -> None:
    if (started := start(__doc__, "firmware", render,
                         export_dir="benchmarks/runs/fashion_mnist/export")) is None:
        return
    args, stamp = started
    export_dir = Path(args.export_dir)
    write_c_for_export(export_dir)  # the C of this commit's writer and kernels
    t0 = time.perf_counter()
    cache: dict = {}
    reports = {mcu: simulate(export_dir, SimOptions(mcu=mcu, backend="firmware",
                                                    emulated_images=20), cache=cache)
               for mcu in PROFILES}
    wall = time.perf_counter() - t0
    turnaround = digits_turnaround(digits_export())
    res = {"provenance": stamp, "wall_seconds": round(wall, 1), "reports": reports,
           "digits": turnaround, "export": relative(str(export_dir))}
    write_section("firmware", json.loads(json.dumps(res, default=str)), render(res))


def render(res: dict) -> list[str]:
    reports, turnaround = res["reports"], res["digits"]
    nrf = reports["nrf52840"]
    host = nrf["firmware"]["host"]
    lines = ["## Firmware: the generated C on an emulated Cortex-M (`benchmarks/firmware_bench.py`)",
             "",
             provenance_line(res.get("provenance")), "",
             f"Run time: {res['wall_seconds']:.0f} s for the Fashion-MNIST part; export "
             f"`{res.get('export', 'benchmarks/runs/fashion_mnist/export')}`. "
             "Measured on the binary: flash and RAM from the linked ELF (`arm-none-eabi-size`, "
             "`nm`), the stack high-water mark from a painted stack, instructions from QEMU "
             "`-icount` (SysTick calibrated with a loop of known length; instructions, not "
             "cycles). Modelled: the simulator's planner (TFLM arena, 32-bit overhead) and cycle "
             "model. Host-measured: TFLM's minimum arena (64-bit Python build, bisected).", "",
             "### Bit-exactness", "",
             f"- Host build (`cc`, plain C kernels): **{host['images']}** test vectors, class "
             "scores and top-1 equal to the reference kernels on "
             + ", ".join(f"{m}{on_first(v, host)} {v['scores_equal']:.2%} / "
                         f"{v['top1_equal']:.2%}" for m, v in host["modes"].items())
             + "; every block's features equal on "
             + f"{min(b['features_equal'] for b in host['blocks']):.2%} of them; accuracy "
             + ", ".join(f"{m}{on_first(v, host)} {v['accuracy']:.2%}"
                         for m, v in host["modes"].items()) + "."]
    for mcu, rep in reports.items():
        emu = rep["firmware"]["emulated"]
        lines.append(f"- {mcu}, emulated {emu['target']} ({emu.get('kernels', 'SMLAD kernels')})"
                     f": {emu['images']} "
                     f"vectors, every block output and class score equal to the host build: "
                     f"{emu['bit_exact_vs_host']}, to the reference kernels: {emu['bit_exact']}, "
                     f"to TFLM: {emu['bit_exact_vs_tflm']}.")
    emu = nrf["firmware"]["emulated"]
    lines += ["", "### Per block on the Cortex-M4 (nRF52840)", "",
              "| block | flash KB (measured) | flash KB (modelled: .tflite) | instructions / image | "
              "MACs | instructions / MAC | modelled cycles | instructions / modelled cycles |",
              "|---|---|---|---|---|---|---|---|"]
    for b in emu["blocks"]:
        lines.append(f"| {b['name']} | {b['flash_bytes'] / KB:.1f} | "
                     f"{b['modelled_flash_bytes'] / KB:.1f} | {b['instructions']:,} | "
                     f"{b['macs']:,} | {b['instructions_per_mac']:.2f} | {b['modelled_cycles']:,} "
                     f"| {b['instructions_over_modelled_cycles']:.3f} |")
    lines += ["", "### Whole binary, per target", "",
              "| MCU (core) | flash KB (ELF) | library KB | .tflite KB | flash / (1.10 × .tflite + 16 KB) "
              "| RAM KB: static + stack + I/O | TFLM min arena, largest block KB | RAM / TFLM | "
              "modelled SRAM KB | instructions / image (measured) | instr / MAC | ms at 1 "
              "instr/cycle | cycles / instruction (estimate) | ms / image (estimate) |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for mcu, rep in reports.items():
        e = rep["firmware"]["emulated"]
        budget = 1.10 * e["tflite_bytes"] + 16 * KB
        mode = rep["mode"]
        instr = e["instructions_per_image"][mode]
        lines.append(
            f"| {mcu} ({rep['profile']['core']}) | {e['flash_bytes'] / KB:.1f} | "
            f"{e['library_flash_bytes'] / KB:.1f} | {e['tflite_bytes'] / KB:.1f} | "
            f"{e['flash_bytes'] / budget:.3f} | {e['ram_bytes'] / KB:.1f} = "
            f"{e['static_ram_bytes'] / KB:.1f} + {e['stack_high_water_bytes'] / KB:.2f} + "
            f"{e['io_buffer_bytes'] / KB:.2f} | {rep['tflm_min_arena_bytes'] / KB:.1f} | "
            f"{e['ram_over_tflm_largest_block']:.3f} | {rep['sram_bytes'] / KB:.1f} | "
            f"{instr:,} | {e['instructions_per_mac'][mode]:.2f} | "
            f"{1e3 * instr / rep['profile']['clock_hz']:.0f} | {cycle_columns(e, mode)} |")
    d = turnaround
    lines += ["", f"Digits (the README's default model): generation {d['generate_s']:.1f} s + "
              f"cross-compile {d['cross_compile_s']:.1f} s + {d['images']} images emulated "
              f"{d['emulate_s']:.1f} s = **{d['total_s']:.1f} s**.", "",
              "ms at 1 instr/cycle: the instructions at the profile's clock, one per cycle; a "
              "single-issue core (M0+, M4, M33) takes at least that long, the dual-issue M7 can "
              "take less, so it is no bound there.", "", cycle_note(reports), "",
              modelled_only(reports)]
    return lines


def cycle_columns(emu: dict, mode: str) -> str:
    """The estimate's two cells, or a dash where a stored run predates it."""
    est = emu.get("cycle_estimate")
    if not est:
        return "- | -"
    return f"{est['cycles_per_instruction']:.3f} | {est['ms_per_image'][mode]:.0f}"


def cycle_note(reports: dict) -> str:
    """How the cycle estimate was made, and per core what it leaves out."""
    ests = {rep["profile"]["core"]: rep["firmware"]["emulated"].get("cycle_estimate")
            for rep in reports.values()}
    if not any(ests.values()):
        return "Cycles: not estimated in this run."
    notes = "; ".join(f"{core}: {e['timing_note']}" for core, e in ests.items()
                      if e and e["timing_note"])
    return ("Cycles (estimate, labelled so everywhere): the measured instructions times the "
            "cycles per instruction of the library's instruction mix, traced on one image "
            "(QEMU's executed-block log: every instruction and each branch's outcome), under "
            "each core's documented timings at zero wait states ("
            + "; ".join(dict.fromkeys(e["timing_source"] for e in ests.values() if e)) + ")."
            + (f" {notes}." if notes else ""))


def on_first(mode: dict, host: dict) -> str:
    """Where a mode ran on fewer vectors than the host build, how many (``fewer_images``)."""
    n = fewer_images(mode, host)
    return f" (on the first {n})" if n else ""


def modelled_only(reports: dict) -> str:
    """Which cores this run measured on a binary, and which profiles stay modelled."""
    measured = ", ".join(f"{mcu} ({rep['firmware']['emulated']['target']})"
                         for mcu, rep in reports.items())
    return (f"Measured on a binary here: {measured}. ESP32-S3 (Xtensa) has no emulated "
            "target: its figures stay modelled (`ctxconv-bench --firmware` says so per row).")


if __name__ == "__main__":
    main()
