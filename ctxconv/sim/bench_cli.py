"""``ctxconv-bench EXPORT_DIR --mcu all``: on-device inference across MCU profiles x modes."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from ctxconv.blockgraph.bundle import ExportBundle, load_export
from ctxconv.blockgraph.ir import ModelFileError
from ctxconv.blockgraph.pipeline import SAME_MODES_NOTE, BlockPipeline, modes_coincide
from ctxconv.cli_errors import DEBUG_HELP, check_output_path, interruptible, report_error
from ctxconv.runtimes.factory import BACKENDS, make_runners
from ctxconv.sim.profiles import McuProfile, list_profiles, load_profile
from ctxconv.sim.simulate import SimOptions, simulate

EXIT_ERROR, EXIT_CHECK_FAILED = 2, 3


def backend_throughput(bundle: ExportBundle, images: int, mode: str) -> dict[str, float]:
    """Images/s of the simulator per backend on the same test images."""
    raw, _ = bundle.test_vectors(images)
    out = {}
    for backend in BACKENDS:
        pipe = BlockPipeline(bundle.manifest, make_runners(bundle, backend))
        n = len(raw) if backend in ("reference", "onnxruntime") else min(len(raw), 200)
        t0 = time.perf_counter()
        pipe.predict(raw[:n], mode)
        out[backend] = n / (time.perf_counter() - t0)
    return out


def run_bench(export_dir: str, mcus: list[str], images: int | None,
              throughput_images: int = 2000, firmware: bool = False,
              emulated_images: int = 20, bit_exact_images: int | None = None
              ) -> dict[str, Any]:
    """Every profile x mode; with ``firmware`` also the generated C, built and run (host
    build once, emulated Cortex-M per profile with an emulated core)."""
    profiles = [load_profile(m) for m in mcus]  # every name checked before any work
    bundle = load_export(export_dir)
    same = modes_coincide(bundle.manifest)
    modes = ["onepass"] if same else list(bundle.manifest["modes"])  # one row when identical
    cache: dict = {}
    rows = []
    for mcu, profile in zip(mcus, profiles, strict=True):
        for mode in modes:
            opts = SimOptions(mcu=mcu, mode=mode, images=images,
                              backend="firmware" if firmware else "reference",
                              emulated_images=emulated_images,
                              bit_exact_images=bit_exact_images)
            rep = simulate(bundle, opts, profile, cache)
            rows.append(rep)
    first = "onepass" if "onepass" in modes else modes[0]
    return {"export_dir": export_dir, "rows": rows,
            "throughput": backend_throughput(bundle, throughput_images, first),
            "throughput_mode": first, "modes_note": SAME_MODES_NOTE if same else None}


def markdown(result: dict[str, Any]) -> str:
    kb = 1024
    lines = ["| MCU | mode | latency ms | energy mJ | MACs | SRAM KB (limit) | arena KB | "
             "flash KB (limit) | accuracy | fits |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        mode = "onepass = multipass" if result.get("modes_note") else r["mode"]
        energy = f"{r['energy_mj']:.3f}" if r["energy_mj"] is not None else "n/a"
        lines.append(
            f"| {r['mcu']} | {mode} | {r['latency_ms']:.1f} | {energy} | {r['macs']:,} | "
            f"{r['sram_bytes'] / kb:.1f} ({r['sram_limit_bytes'] / kb:.0f}) | "
            f"{r['arena_bytes'] / kb:.1f} | {r['flash_bytes'] / kb:.1f} "
            f"({r['flash_limit_bytes'] / kb:.0f}) | {r['accuracy']:.2%} | "
            f"{'yes' if r['fits'] else 'NO'} |")
    if any("firmware" in r for r in result["rows"]):
        lines += ["", firmware_markdown(result["rows"])]
    if result.get("modes_note"):
        lines += ["", result["modes_note"] + " (one row per MCU)."]
    first = result["rows"][0] if result["rows"] else None
    if first is not None and first.get("bit_exact_images"):
        lines += ["", f"Reference kernels vs TFLM, block by block, on {first['bit_exact_images']} "
                  f"of {first['test_vectors']} test vectors: "
                  f"{'bit-exact' if first['bit_exact_vs_tflm'] else 'NOT bit-exact'} "
                  f"(max LSB per block {first['max_lsb_vs_tflm']})."]
    lines += ["", f"Simulator throughput ({result['throughput_mode']}, images/s on this CPU): "
              + ", ".join(f"{b} {v:.0f}" for b, v in result["throughput"].items())]
    return "\n".join(lines)


def firmware_markdown(rows: list[dict[str, Any]]) -> str:
    """Measured on the generated C: the emulated binary per profile beside the model."""
    kb = 1024
    lines = ["Generated C, measured on the binary (emulated Cortex-M under QEMU; bit-exactness "
             "of the host build on the same test vectors as the accuracy):", "",
             "| MCU | mode | core (board) | instructions / image (measured) | ms at 1 "
             "instr/cycle | ms (estimate: traced mix x documented timings) | "
             "RAM KB (static + stack + I/O) | flash KB | bit-exact (emulated / host) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        fw = r["firmware"]
        emu = fw.get("emulated")
        host = "yes" if fw["host"]["bit_exact"] else "NO"
        if emu is None:
            lines.append(f"| {r['mcu']} | {r['mode']} | modelled only ({r['profile']['core']})"
                         f" | | | | | | - / {host} |")
            continue
        instr = emu["instructions_per_image"][r["mode"]]
        lines.append(
            f"| {r['mcu']} | {r['mode']} | {emu['target']} | {instr:,} | "
            f"{1e3 * instr / r['profile']['clock_hz']:.1f} | "
            f"{emu['cycle_estimate']['ms_per_image'][r['mode']]:.1f} | "
            f"{emu['ram_bytes'] / kb:.1f} | "
            f"{emu['flash_bytes'] / kb:.1f} | {'yes' if emu['bit_exact'] else 'NO'} / {host} |")
    lines += ["", "ms at 1 instr/cycle: a floor on single-issue cores (M0+, M4, M33), none on the "
              "dual-issue M7."]
    return "\n".join(lines)


@interruptible
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ctxconv-bench", description=__doc__)
    p.add_argument("export_dir")
    p.add_argument("--mcu", default="all", help="comma-separated profile names, or 'all'")
    p.add_argument("--images", type=int, default=None, help="test images (default all)")
    p.add_argument("--firmware", action="store_true",
                   help="also build and run the export's generated C (host + emulated MCU)")
    p.add_argument("--emulated-images", type=int, default=20,
                   help="with --firmware: test vectors run on each emulated MCU (default 20)")
    p.add_argument("--bit-exact-images", type=int, default=None, metavar="N",
                   help="test vectors compared reference kernels vs TFLM (default: all)")
    p.add_argument("--json", dest="json_path", default=None)
    p.add_argument("--out", default=None, help="also write the markdown table to this file")
    p.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr, force=True)
    if args.bit_exact_images is not None and args.bit_exact_images < 0:
        print("error: --bit-exact-images must be >= 0 (0 skips the check)", file=sys.stderr)
        return 2
    if (args.images is not None and args.images < 1) or args.emulated_images < 1:
        print("error: --images and --emulated-images must be >= 1", file=sys.stderr)
        return EXIT_ERROR
    try:
        mcus = list_profiles() if args.mcu == "all" else [m.strip() for m in args.mcu.split(",")]
        check_profiles(mcus)
        check_output_path(args.json_path, "--json")
        check_output_path(args.out, "--out")
        result = run_bench(args.export_dir, mcus, args.images, firmware=args.firmware,
                           emulated_images=args.emulated_images,
                           bit_exact_images=args.bit_exact_images)
    except (ModelFileError, ValueError, RuntimeError, OSError) as exc:
        return report_error(exc, EXIT_ERROR, args.debug)
    table = markdown(result)
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(result, indent=2))
    failed = [f"{r['mcu']} ({r['mode']}): {m}" for r in result["rows"] for m in r["failed_checks"]]
    for message in dict.fromkeys(failed):
        print(f"error: check failed: {message}", file=sys.stderr)
    return EXIT_CHECK_FAILED if failed else 0


def check_profiles(mcus: list[str]) -> list[McuProfile]:
    """Every named profile, loaded (ValueError names the first unknown or malformed one)."""
    if not mcus or "" in mcus:
        raise ValueError("--mcu: give comma-separated profile names, or 'all'")
    return [load_profile(m) for m in mcus]


if __name__ == "__main__":
    sys.exit(main())
