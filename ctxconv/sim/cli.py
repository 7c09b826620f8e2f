"""``ctxconv-sim EXPORT_DIR --mcu NAME``: the block pipeline on a microcontroller profile."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from ctxconv.blockgraph.ir import ModelFileError
from ctxconv.cli_errors import DEBUG_HELP, check_output_path, interruptible, report_error
from ctxconv.runtimes.firmware.build import FirmwareDoesNotFit
from ctxconv.sim.profiles import profiles_help
from ctxconv.sim.simulate import (
    FIRMWARE_TFLM_IMAGES,
    SIM_BACKENDS,
    SimOptions,
    format_table,
    plot_memory,
    simulate,
)

EXIT_ERROR, EXIT_CHECK_FAILED, EXIT_DOES_NOT_FIT = 2, 3, 4


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ctxconv-sim",
        description="Simulate an exported int8 block pipeline on a microcontroller: memory plan "
                    "(arena, flash, fit verdict), MACs, latency and energy estimates, accuracy "
                    "on the export's test vectors, TFLM's measured minimum arena.",
    )  # fmt: skip
    p.add_argument("export_dir", help="directory written by ctxconv-export --int8")
    p.add_argument("--mcu", default="nrf52840",
                   help=f"MCU profile name or YAML path (known: {profiles_help()})")
    p.add_argument("--mode", choices=("onepass", "multipass"), default=None,
                   help="inference mode (default: onepass when the export supports it)")
    p.add_argument("--backend", choices=SIM_BACKENDS, default="reference",
                   help="firmware: build the export's generated C, run it on every test vector "
                        "on this machine and on an emulated Cortex-M (QEMU), measure the binary")
    p.add_argument("--emulated-images", type=int, default=20,
                   help="firmware backend: test vectors run on the emulated MCU (default 20)")
    p.add_argument("--images", type=int, default=None, help="number of test images (default all)")
    p.add_argument("--bit-exact-images", type=int, default=None, metavar="N",
                   help="test vectors compared reference kernels vs TFLM, block by block "
                        "(default: every image run; with --backend firmware, which checks the "
                        "C against the reference kernels on every image: the first "
                        f"{FIRMWARE_TFLM_IMAGES}; TFLM takes about 20 ms per image)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="processes that share the test vectors (default: every core)")
    p.add_argument("--json", dest="json_path", default=None, help="write the report as JSON")
    p.add_argument("--plot", default=None, metavar="PATH",
                   help="write a PNG of memory per block vs the MCU's limits to PATH (none "
                        "by default: nothing is written into the export directory)")
    p.add_argument("--no-tflm-arena", action="store_true",
                   help="skip the bisection of TFLM's real minimum arena (faster)")
    p.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    return p


@interruptible
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr, force=True)
    if (args.images is not None and args.images < 1) or args.emulated_images < 1:
        print("error: --images and --emulated-images must be >= 1", file=sys.stderr)
        return EXIT_ERROR
    if args.bit_exact_images is not None and args.bit_exact_images < 0:
        print("error: --bit-exact-images must be >= 0 (0 skips the check)", file=sys.stderr)
        return EXIT_ERROR
    if args.workers is not None and args.workers < 1:
        print("error: --workers must be >= 1", file=sys.stderr)
        return EXIT_ERROR
    try:
        check_output_path(args.json_path, "--json")
        check_output_path(args.plot, "--plot")
    except ValueError as exc:
        return report_error(exc, EXIT_ERROR, args.debug)
    opts = SimOptions(mcu=args.mcu, mode=args.mode, backend=args.backend, images=args.images,
                      measure_tflm=not args.no_tflm_arena, emulated_images=args.emulated_images,
                      bit_exact_images=args.bit_exact_images, workers=args.workers)
    try:
        report = simulate(args.export_dir, opts)
    except FirmwareDoesNotFit as exc:
        return report_error(exc, EXIT_DOES_NOT_FIT, args.debug)
    except (ModelFileError, ValueError, RuntimeError, OSError) as exc:
        return report_error(exc, EXIT_ERROR, args.debug)
    print(format_table(report))
    if args.plot:
        print(f"memory plot: {plot_memory(report, args.plot)}")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(report, indent=2))
    if report["failed_checks"]:
        for message in report["failed_checks"]:
            print(f"error: check failed: {message}", file=sys.stderr)
        return EXIT_CHECK_FAILED
    if not report["fits"]:
        print(f"error: {report['explanation']}", file=sys.stderr)
        return EXIT_DOES_NOT_FIT
    return 0


if __name__ == "__main__":
    sys.exit(main())
