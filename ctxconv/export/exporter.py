"""Export a training run: per-block int8 (or float) ONNX + TFLite, test vectors, manifest.

Everything is written into a temporary directory beside the output and moved into
place at the end, so an interrupted or failed export never leaves half-written files.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ctxconv.blockgraph.bundle import ExportBundle
from ctxconv.blockgraph.manifest import (
    C_DIR,
    FORMAT,
    MANIFEST_NAME,
    file_digests,
    io_records,
    seal_manifest,
    validate_manifest,
)
from ctxconv.blockgraph.onnx import write_onnx
from ctxconv.blockgraph.pipeline import CONTEXT_ON, BlockPipeline
from ctxconv.blockgraph.tflite.writer import write_tflite
from ctxconv.codegen import c_record, write_c_library
from ctxconv.export.fold import FloatBlock, fold_block
from ctxconv.export.model_card import CARD_NAME, model_card
from ctxconv.export.quantize import CONTEXT_QUANT, build_block_graph, calibrate
from ctxconv.export.run_check import (
    check_finished,
    check_float_accuracy,
    check_learned,
    check_measured_chance,
    read_summary,
)
from ctxconv.export.verify import VerificationError, verification_limits, verify_blocks
from ctxconv.runtimes.factory import make_runners
from ctxconv.train.checkpoint import (
    CHECKPOINT_NAME,
    CheckpointError,
    load_checkpoint,
    restore_model,
)
from ctxconv.train.data import DataConfig, load_datasets, make_loader
from ctxconv.train.inference import available_modes, evaluate
from ctxconv.workdirs import sweep_stale

log = logging.getLogger(__name__)
FORMATS = ("onnx", "tflite", "c")


@dataclass
class ExportOptions:
    int8: bool = True
    formats: tuple[str, ...] | None = None  # None: all (int8), onnx + tflite (float)
    calib_samples: int = 1000
    calib_method: str = "minmax"
    calib_percentile: float = 99.99
    verify_samples: int = 100
    test_samples: int | None = None  # None: the whole test split
    min_top1_agreement: float = 0.99  # per runtime vs the TFLite reference, on verify_samples
    max_lsb: int = 1  # onnxruntime / TFLM vs LiteRT reference, per block output
    allow_untrained: bool = False  # export a run that ended at chance level on validation
    allow_unfinished: bool = False  # export a run whose training did not finish


def block_macs(fb: FloatBlock, num_classes: int) -> int:
    """Multiply-accumulates of one block on one image (conv + context + goodness)."""
    k = fb.conv_weight.shape[-1]
    out = fb.out_size**2 * fb.out_channels
    conv = out * fb.in_channels * k * k
    head = fb.head_weight.size if fb.head_weight is not None else out  # energy: squares
    ctx = sum(w.size for w in (fb.context_weight, fb.context_scale) if w is not None)
    film = out if fb.context_scale is not None else 0
    l2 = fb.in_channels * fb.out_size**2 if fb.l2_norm else 0
    return int(conv + head + ctx + film + l2)


def _load_run(run_dir: Path) -> dict[str, Any]:
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory {run_dir} does not exist: pass the directory "
                              "ctxconv-train wrote (it holds checkpoint.pt)")
    return load_checkpoint(run_dir / CHECKPOINT_NAME)


def _nhwc(x: torch.Tensor) -> np.ndarray:
    return x.permute(0, 2, 3, 1).contiguous().numpy()


def _raw_images(x: torch.Tensor, info: dict[str, Any]) -> np.ndarray:
    """Undo the normalisation: the stored pixels (uint8), so raw images can be fed."""
    mean = torch.tensor(info["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(info["std"]).view(1, -1, 1, 1)
    raw = torch.round((x * std + mean) / info["pixel_scale"]).clamp(0, 255)
    return _nhwc(raw).astype(np.uint8)


def export_run(run_dir: str | Path, out_dir: str | Path | None = None,
               options: ExportOptions | None = None) -> dict[str, Any]:
    """Export ``run_dir`` into ``out_dir`` (default RUN_DIR/export[-float]); returns the manifest.

    Raises RunCheckError (nothing written) when the run is unfinished (no complete
    checkpoint or no ``summary.json``) unless ``allow_unfinished``, when it ended at chance
    level (on validation, or on the test accuracy measured here), or when the float
    accuracy measured here contradicts its ``summary.json``, and VerificationError (after
    writing the export, with ``verification.passed`` false in its manifest) when runtimes
    disagree beyond the thresholds.
    """
    opts = options or ExportOptions()
    if opts.formats is None:
        opts.formats = FORMATS if opts.int8 else ("onnx", "tflite")
    if "c" in opts.formats and not opts.int8:
        raise ValueError("the C library is full-integer: export with --int8 to write it")
    unknown = [f for f in opts.formats if f not in FORMATS]
    if unknown or not opts.formats:
        raise ValueError(f"unknown export format(s) {unknown or opts.formats}; "
                         f"choose from {FORMATS}")
    if not {"onnx", "tflite"} & set(opts.formats):
        raise ValueError("--format c needs a model format beside it: the export is verified "
                         "across runtimes and read by the simulator through its .tflite "
                         "files (use --format tflite,c, or all three by default)")
    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    payload = _load_run(run_dir)
    model = restore_model(payload, run_dir / CHECKPOINT_NAME)
    summary = read_summary(run_dir)
    run_record = check_finished(payload, summary, run_dir, opts.allow_unfinished)
    check_learned(summary, run_dir, opts.allow_untrained)
    info = payload["dataset"]
    k = int(info["num_classes"])
    out_dir = Path(out_dir) if out_dir else run_dir / ("export" if opts.int8 else "export-float")
    data_cfg = DataConfig(**{key: v for key, v in payload.get("data", {}).items()
                             if key in DataConfig.__dataclass_fields__})
    data_cfg.dataset, data_cfg.num_classes = info["name"], None
    data_cfg.max_test_samples = opts.test_samples
    train, _, test, _ = load_datasets(data_cfg)
    modes = available_modes(model)
    # the float model on the test split, checked against what training recorded
    log.info("measuring float accuracy on %d test images", len(test))
    float_acc = {m: evaluate(model, make_loader(test, 1000, shuffle=False), m) for m in modes}
    norm = json.loads(json.dumps({"mean": info["mean"], "std": info["std"]}))
    run_check = check_float_accuracy(summary, float_acc, len(test), norm, run_dir)
    run_check["chance"] = check_measured_chance(float_acc, test.tensors[1], k, run_dir,
                                                opts.allow_untrained)

    size = model.cfg.image_size
    floats: list[FloatBlock] = []
    for i, block in enumerate(model.blocks):
        fb = fold_block(block, i, size)
        floats.append(fb)
        size = fb.out_size
    calib = _nhwc(train.tensors[0][: opts.calib_samples]).astype(np.float64)
    log.info("calibrating %d blocks on %d training images (%s)", len(floats), calib.shape[0],
             opts.calib_method)
    ranges = calibrate(floats, calib, k, opts.calib_method, opts.calib_percentile)
    graphs = [build_block_graph(fb, r, k, int8=opts.int8) for fb, r in zip(floats, ranges,
                                                                            strict=True)]
    score_blocks = set(model.score_blocks)
    manifest: dict[str, Any] = {
        "format": FORMAT, "int8": opts.int8, "created_unix": int(time.time()),
        "dataset": {"name": info["name"], "num_classes": k, "class_names": info["class_names"],
                    "image_size": info["image_size"], "in_channels": info["in_channels"]},
        "input": {"layout": "NHWC", "pixel_scale": info["pixel_scale"], "mean": info["mean"],
                  "std": info["std"],
                  "note": "x = (raw * pixel_scale - mean) / std, then quantize with block 0's "
                          "features_in scale and zero_point"},
        "context": {"dtype": "int8", "scale": CONTEXT_QUANT[0], "zero_point": CONTEXT_QUANT[1],
                    "on": CONTEXT_ON, "off": CONTEXT_QUANT[1]},
        "modes": modes, "score_blocks": sorted(score_blocks),
        "quantization": {"weights": "int8 symmetric per-output-channel", "bias": "int32",
                         "activations": "int8 asymmetric per-tensor",
                         "calibration": {"method": opts.calib_method,
                                         "samples": int(calib.shape[0]),
                                         "split": "train"}} if opts.int8 else None,
        "blocks": [], "run_check": run_check, "run": run_record,
    }  # fmt: skip

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(out_dir.parent, f".{out_dir.name}.")  # of a killed export
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.{os.getpid()}."))
    try:
        log.info("writing %s for %d blocks", " and ".join(opts.formats), len(graphs))
        tflite = []
        for fb, graph in zip(floats, graphs, strict=True):
            files = {}
            if "tflite" in opts.formats:
                tflite.append(write_tflite(graph, graph.name))
                (tmp / f"{graph.name}.tflite").write_bytes(tflite[-1])
                files["tflite"] = f"{graph.name}.tflite"
            if "onnx" in opts.formats:
                (tmp / f"{graph.name}.onnx").write_bytes(write_onnx(graph))
                files["onnx"] = f"{graph.name}.onnx"
            manifest["blocks"].append({
                "name": graph.name, "index": fb.index, "contextual": fb.contextual,
                "score_block": fb.index in score_blocks, "files": files,
                "inputs": io_records(graph, graph.inputs),
                "outputs": io_records(graph, graph.outputs),
                "pool": fb.pool, "kernel": int(fb.conv_weight.shape[-1]),
                "filters": fb.out_channels, "head_grid": fb.head_grid,
                "macs": block_macs(fb, k), "params": fb.param_count(),
                **(verification_limits(graph) if opts.int8 else {}),
            })  # fmt: skip
        raw_test = _raw_images(test.tensors[0], info)
        labels = test.tensors[1].numpy()
        np.savez_compressed(tmp / "test_vectors.npz", images=raw_test, labels=labels)
        manifest["test_vectors"] = {"file": "test_vectors.npz", "count": int(len(labels)),
                                    "split": "test", "layout": "NHWC", "dtype": "uint8"}
        # the calibration images with labels: labelled data for on-device training
        n_calib = int(calib.shape[0])
        train_raw = _raw_images(train.tensors[0][:n_calib], info)
        train_labels = train.tensors[1][:n_calib].numpy()
        np.savez_compressed(tmp / "train_vectors.npz", images=train_raw, labels=train_labels)
        manifest["train_vectors"] = {"file": "train_vectors.npz", "count": n_calib,
                                     "split": "train (the calibration images)",
                                     "layout": "NHWC", "dtype": "uint8"}

        if "c" in opts.formats:
            sample = (train_raw[0], int(train_labels[0])) if len(train_labels) else None
            _, layout = write_c_library(manifest, graphs, tmp / C_DIR, tflite or None, sample)
            manifest["c"] = c_record(layout, manifest, graphs)

        # accuracy: float torch (above) and the exported pipeline (onnxruntime, batched)
        log.info("measuring exported accuracy on %d test images", len(labels))
        accuracy = {"float": float_acc}
        if "onnx" in opts.formats:
            files = ExportBundle(tmp, manifest, [], [])
            pipe = BlockPipeline(manifest, make_runners(files, "onnxruntime"))
            key = "int8" if opts.int8 else "exported_float"
            preds = pipe.predict_modes(raw_test, modes)
            accuracy[key] = {m: float((p == labels).mean()) for m, p in preds.items()}
        manifest["accuracy"] = accuracy
        log.info("verifying %d test images in every runtime (torch, onnxruntime, LiteRT, TFLM)",
                 min(opts.verify_samples, len(labels)))
        agreement = verify_blocks(model, manifest, tmp, test, opts)
        manifest["agreement"] = agreement
        manifest["export_seconds"] = round(time.perf_counter() - t0, 2)
        (tmp / CARD_NAME).write_text(model_card(manifest, graphs, tmp, run_dir))
        manifest["files"] = file_digests(tmp)
        validate_manifest(manifest)
        seal_manifest(manifest)
        with open(tmp / MANIFEST_NAME, "w") as f:
            json.dump(manifest, f, indent=2)
        _move_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    manifest["export_dir"] = str(out_dir)
    if not agreement["passed"]:
        raise VerificationError(agreement["failures"], manifest)
    return manifest


def _move_into_place(tmp: Path, out_dir: Path) -> None:
    """Replace ``out_dir`` with ``tmp`` by renames (the old export is removed last)."""
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
