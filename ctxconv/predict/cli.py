"""``ctxconv-predict EXPORT_DIR IMAGE...``: the class of each image, by name, from an export
run on any backend: the project's int8 kernels, TFLM, LiteRT, onnxruntime, or the export's
generated C library built for this machine."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from ctxconv.blockgraph.bundle import load_export
from ctxconv.blockgraph.ir import ModelFileError
from ctxconv.blockgraph.pipeline import BlockPipeline
from ctxconv.cli_errors import DEBUG_HELP, check_output_path, interruptible, report_error
from ctxconv.predict.images import ImageError, load_images
from ctxconv.runtimes.factory import BACKENDS, make_runners
from ctxconv.runtimes.firmware.targets import FirmwareError

PREDICT_BACKENDS = (*BACKENDS, "c")
EXIT_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ctxconv-predict",
        description="Classify images (PNG, JPEG, .npy of raw pixels) with an exported model "
                    "and print each one's class name.")
    p.add_argument("export_dir", help="directory written by ctxconv-export")
    p.add_argument("images", nargs="+", metavar="IMAGE",
                   help="picture files (converted to the model's channels and size) or .npy "
                        "arrays of raw pixels as the dataset stores them (one image or a batch)")
    p.add_argument("--backend", choices=PREDICT_BACKENDS, default="reference",
                   help="reference: the project's int8 kernels (bit-exact with TFLM); c: the "
                        "export's generated C library, compiled for this machine")
    p.add_argument("--mode", default=None, help="inference mode (default: the export's first)")
    p.add_argument("--json", dest="json_path", default=None,
                   help="also write every image's class and scores as JSON")
    p.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    return p


def class_scores(bundle, raw: np.ndarray, backend: str, mode: str) -> np.ndarray:
    """(N, K) class scores of raw images (argmax: the prediction)."""
    if backend != "c":
        pipe = BlockPipeline(bundle.manifest, make_runners(bundle, backend))
        return pipe.scores(pipe.quantize_images(raw), mode)
    from ctxconv.runtimes.firmware.build import build_host
    from ctxconv.runtimes.firmware.run import run_harness
    from ctxconv.sim.firmware_check import block_shapes, c_dir_of

    c_dir = c_dir_of(bundle)
    modes = list(bundle.manifest["modes"])
    with tempfile.TemporaryDirectory(prefix="ctxconv-predict-") as tmp:
        exe = build_host(c_dir, Path(tmp), modes)
        got = run_harness(exe, raw, Path(tmp), block_shapes(bundle), bundle.num_classes,
                          modes, False, timeout=60 + 0.01 * len(raw))
    return got.scores[mode]


@interruptible
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_output_path(args.json_path, "--json")
        bundle = load_export(args.export_dir)
        manifest = bundle.manifest
        modes = list(manifest["modes"])
        mode = args.mode or modes[0]
        if mode not in modes:
            raise ValueError(f"--mode {mode}: the export runs {', '.join(modes)}")
        images = load_images(args.images, manifest)
        raw = np.stack([im.raw for im in images])
        scores = class_scores(bundle, raw, args.backend, mode)
    except (ModelFileError, ImageError, FirmwareError, ValueError, OSError) as exc:
        return report_error(exc, EXIT_ERROR, args.debug)
    names = list(manifest["dataset"]["class_names"])
    rows = []
    for im, s in zip(images, scores, strict=True):
        k = int(np.argmax(s))
        notes = f"  ({'; '.join(im.notes)})" if im.notes else ""
        print(f"{im.name}: {names[k]} (class {k}){notes}")
        rows.append({"image": im.name, "class": k, "name": names[k],
                     "scores": [float(v) for v in s], "notes": im.notes})
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(
            {"export": str(bundle.path), "backend": args.backend, "mode": mode,
             "images": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
