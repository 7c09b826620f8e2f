"""Export benchmark: writes the "Export" section of BENCHMARKS.md.

    python benchmarks/export_bench.py [RUN_DIR]   # default: benchmarks/runs/fashion_mnist
    python benchmarks/export_bench.py --render    # markdown from results/export.json only

Times ``ctxconv-export RUN_DIR --int8`` (verification included), reports float vs int8
accuracy per inference mode and the cross-runtime agreement from the manifest, and the
top-1 agreement of ONNX (onnxruntime) and TFLite (the simulator's kernels, bit-exact with
TFLM) over the whole test set.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a path: the repository

from benchmarks.provenance import ROOT, relative
from benchmarks.report import provenance_line, start, write_section
from ctxconv.blockgraph.bundle import load_export
from ctxconv.blockgraph.pipeline import BlockPipeline
from ctxconv.runtimes.factory import make_runners


def pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def main() -> None:
    if (started := start(__doc__, "export", render,
                         run_dir="benchmarks/runs/fashion_mnist")) is None:
        return
    args, stamp = started
    run_dir = Path(args.run_dir)
    cmd = ["ctxconv-export", str(run_dir), "--int8"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    export_dir = run_dir / "export"
    manifest = json.loads((export_dir / "manifest.json").read_text())
    bundle = load_export(export_dir)
    raw, labels = bundle.test_vectors()
    agree = {}
    for mode in manifest["modes"]:
        tfl = BlockPipeline(manifest, make_runners(bundle, "reference")).predict(raw, mode)
        onx = BlockPipeline(manifest, make_runners(bundle, "onnxruntime")).predict(raw, mode)
        agree[mode] = {"onnx_vs_tflite": float((tfl == onx).mean()),
                       "tflite_accuracy": float((tfl == labels).mean()),
                       "onnx_accuracy": float((onx == labels).mean())}
    res = {"provenance": stamp, "command": relative(" ".join(cmd)),
           "wall_seconds": round(wall, 1), "export_seconds": manifest["export_seconds"],
           "accuracy": manifest["accuracy"], "agreement": manifest["agreement"],
           "full_test_agreement": agree, "test_images": int(len(labels)),
           "flash_bytes": sum((export_dir / b["files"]["tflite"]).stat().st_size
                              for b in manifest["blocks"])}
    write_section("export", res, render(res))


def render(res: dict) -> list[str]:
    agree = res["full_test_agreement"]
    lines = ["## Export (`benchmarks/export_bench.py`)", "",
             provenance_line(res.get("provenance")), "",
             f"Command: `{res['command']}`: "
             f"{res['wall_seconds']:.1f} s wall, verification included "
             f"({res['export_seconds']:.1f} s inside the exporter). TFLite files: "
             f"{res['flash_bytes'] / 1024:.0f} KB in all.", "",
             "| mode | float (torch) | int8 (onnxruntime) | int8 TFLite (TFLM-exact kernels) "
             "| ONNX vs TFLite top-1 agreement |", "|---|---|---|---|---|"]
    for mode, a in agree.items():
        lines.append(f"| {mode} | {pct(res['accuracy']['float'][mode])} | "
                     f"{pct(res['accuracy']['int8'][mode])} | {pct(a['tflite_accuracy'])} | "
                     f"{pct(a['onnx_vs_tflite'])} of {res['test_images']} |")
    lines += ["", f"Per-block agreement on {res['agreement']['samples']} test images, max |diff| "
              f"vs LiteRT reference kernels (LSB of each output):", "",
              "| block | TFLM | onnxruntime | LiteRT default (XNNPACK) | float torch on scores, LSB (max / mean) |",
              "|---|---|---|---|---|"]
    for row in res["agreement"]["blocks"]:
        tf = row["torch_float"]["scores"]
        lines.append(f"| {row['block']} | {row['tflm']['max_diff']} | "
                     f"{row['onnxruntime']['max_diff']} | {row['litert']['max_diff']} | "
                     f"{tf['max']:.2f} / {tf['mean']:.2f} |")
    lines.append("")
    return lines


if __name__ == "__main__":
    main()
