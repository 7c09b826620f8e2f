"""``ctxconv-export RUN_DIR --int8``: per-block int8 ONNX + TFLite with a verified manifest."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ctxconv.blockgraph.ir import ModelFileError
from ctxconv.blockgraph.manifest import MANIFEST_NAME
from ctxconv.blockgraph.pipeline import modes_coincide
from ctxconv.cli_errors import DEBUG_HELP, report_error
from ctxconv.codegen import CGenerationError, write_c_for_export
from ctxconv.export.exporter import FORMATS, ExportOptions, export_run
from ctxconv.export.fold import UnsupportedLayerError
from ctxconv.export.quantize import CALIB_METHODS
from ctxconv.export.verify import VerificationError, agreement_table

EXIT_ERROR, EXIT_VERIFICATION = 2, 3


def _formats(text: str) -> tuple[str, ...]:
    formats = tuple(f.strip() for f in text.split(",") if f.strip())
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise argparse.ArgumentTypeError(f"unknown format(s) {bad or text!r}; choose from "
                                         f"{','.join(FORMATS)}")
    return formats


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ctxconv-export",
        description="Export each block of a ctxconv-train run to ONNX and TFLite. With --int8: "
                    "full-integer int8 (per-channel weights, int32 bias, int8 activations "
                    "calibrated on training images); without: a float reference export. "
                    "Outputs are verified across torch, onnxruntime, LiteRT and TFLM.",
    )  # fmt: skip
    p.add_argument("run_dir", help="directory written by ctxconv-train (holds checkpoint.pt), "
                                   "or an export directory (with --format c)")
    p.add_argument("--int8", action="store_true", help="quantize to full-integer int8")
    p.add_argument("--format", type=_formats, default=None, metavar="onnx,tflite,c",
                   help="formats to write (default: all three with --int8, onnx,tflite "
                        "without); RUN_DIR may be an export directory with --format c, to "
                        "generate its C library from its .tflite files")
    p.add_argument("--out", default=None,
                   help="output directory (default: RUN_DIR/export, or RUN_DIR/export-float)")
    p.add_argument("--calib-samples", type=int, default=1000,
                   help="training images used for calibration (default 1000)")
    p.add_argument("--calib-method", choices=CALIB_METHODS, default="minmax")
    p.add_argument("--verify-samples", type=int, default=100,
                   help="test images run through every runtime (default 100)")
    p.add_argument("--test-samples", type=int, default=None,
                   help="limit the test vectors / accuracy to the first N test images")
    p.add_argument("--min-agreement", type=float, default=0.99,
                   help="fail when a runtime's top-1 agreement with LiteRT reference is lower")
    p.add_argument("--max-lsb", type=int, default=1,
                   help="fail when TFLM/onnxruntime outputs differ by more LSB (default 1)")
    p.add_argument("--allow-untrained", action="store_true",
                   help="export a run that ended at chance level on validation (refused "
                        "otherwise)")
    p.add_argument("--allow-unfinished", action="store_true",
                   help="export a run whose training did not finish (checkpoint incomplete or "
                        "no summary.json; refused otherwise); the manifest records it")
    p.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    return p


def _c_from_export(args: argparse.Namespace) -> int:
    """``ctxconv-export EXPORT_DIR --format c``: the C library from an existing export."""
    if args.format != ("c",):
        print(f"error: {args.run_dir} is an export directory; only its C library can be "
              "generated from it (--format c), other formats need the run directory",
              file=sys.stderr)
        return EXIT_ERROR
    try:
        manifest, layout = write_c_for_export(args.run_dir)
    except (ModelFileError, CGenerationError, OSError) as exc:
        return report_error(exc, EXIT_ERROR, args.debug)
    print(f"wrote the C library to {Path(args.run_dir) / manifest['c']['dir']} "
          f"(arena {layout.size} bytes)")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)
    if args.calib_samples < 1 or args.verify_samples < 1:
        print("error: --calib-samples and --verify-samples must be >= 1", file=sys.stderr)
        return EXIT_ERROR
    opts = ExportOptions(int8=args.int8, formats=args.format, calib_samples=args.calib_samples,
                         calib_method=args.calib_method, verify_samples=args.verify_samples,
                         test_samples=args.test_samples, min_top1_agreement=args.min_agreement,
                         max_lsb=args.max_lsb, allow_untrained=args.allow_untrained,
                         allow_unfinished=args.allow_unfinished)
    if (Path(args.run_dir) / MANIFEST_NAME).is_file():  # an export directory: C only
        return _c_from_export(args)
    try:
        manifest = export_run(args.run_dir, args.out, opts)
    except VerificationError as exc:
        print(agreement_table(exc.manifest["agreement"]))
        print(f"error: {exc} (files kept in {exc.manifest['export_dir']} for inspection)",
              file=sys.stderr)
        return EXIT_VERIFICATION
    except (UnsupportedLayerError, ModelFileError, ValueError, RuntimeError, OSError) as exc:
        return report_error(exc, EXIT_ERROR, args.debug)
    print(agreement_table(manifest["agreement"]))
    same = modes_coincide(manifest)
    for kind, accs in manifest["accuracy"].items():
        if same:  # one computation: one number
            print(f"accuracy {kind:>6}: onepass = multipass {next(iter(accs.values())):.2%}")
        else:
            print(f"accuracy {kind:>6}: " + ", ".join(f"{m} {a:.2%}" for m, a in accs.items()))
    if not manifest["run"]["finished"]:
        print("the run is unfinished (--allow-unfinished): this export is of a partly "
              "trained model")
    print(f"wrote {len(manifest['files'])} files to {manifest['export_dir']} "
          f"in {manifest['export_seconds']:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
