"""ctxconv-export end to end: a tiny digits model -> int8 ONNX/TFLite, verified."""

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from tiny_runs import train_tiny

from ctxconv.blockgraph.manifest import sha256
from ctxconv.blockgraph.pipeline import BlockPipeline
from ctxconv.export import exporter as exporter_mod
from ctxconv.export.cli import main as export_main
from ctxconv.export.exporter import ExportOptions, export_run
from ctxconv.export.fold import UnsupportedLayerError
from ctxconv.export.verify import verification_arena
from ctxconv.runtimes.runners import LiteRTRunner, OnnxRunner, TFLMRunner
from ctxconv.train.config import TrainAppConfig
from ctxconv.train.data_gen import DataGenConfig
from ctxconv.train.model import ModelConfig
from ctxconv.train.run import train_run
from ctxconv.train.trainer import TrainerConfig


@pytest.fixture(scope="module")
def run_dir(digits_run):
    return digits_run


@pytest.fixture(scope="module")
def exported(digits_export):
    return digits_export


def test_files_and_manifest(exported):
    out = Path(exported["export_dir"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format"] == "ctxconv-export-v2" and manifest["int8"] is True
    assert [b["name"] for b in manifest["blocks"]] == ["block0", "block1"]
    for name, digest in manifest["files"].items():
        assert sha256(out / name) == digest
    b0 = manifest["blocks"][0]
    assert b0["inputs"][0]["shape"] == [1, 8, 8, 1] and b0["inputs"][0]["layout"] == "NHWC"
    assert [o["name"] for o in b0["outputs"]] == ["features", "scores"]
    assert manifest["input"]["pixel_scale"] == 1 / 16
    assert manifest["modes"] == ["multipass", "onepass"]
    assert set(manifest["accuracy"]) == {"float", "int8"}
    assert manifest["dataset"]["class_names"][3] == "3"


def test_format_checks(exported):
    out = Path(exported["export_dir"])
    for block in exported["blocks"]:
        model = onnx.load(out / block["files"]["onnx"])
        onnx.checker.check_model(model, full_check=True)
        data = (out / block["files"]["tflite"]).read_bytes()
        assert data[4:8] == b"TFL3"


def test_runtimes_agree(exported):
    """TFLM == LiteRT reference (conv/pool bit-exact; FC may round a tie differently: 1 LSB),
    onnxruntime within 1 LSB, float torch within quantization error."""
    for row in exported["agreement"]["blocks"]:
        assert row["tflm"]["per_output"]["features"] == 0, row
        assert row["tflm"]["per_output"]["scores"] <= 1, row
        assert row["onnxruntime"]["max_diff"] <= 1, row
        assert row["torch_float"]["features"]["mean"] < 0.5, row
    for mode, agree in exported["agreement"]["top1"].items():
        assert agree["tflm"] == 1.0 and agree["onnxruntime"] >= 0.98, (mode, agree)
    assert exported["agreement"]["passed"]


def test_int8_accuracy_within_one_point_of_float(exported):
    for mode in exported["modes"]:
        assert abs(exported["accuracy"]["int8"][mode] - exported["accuracy"]["float"][mode]) <= 0.01


def test_tflm_pipeline_direct(exported):
    """Independent check: the TFLM pipeline on raw test images matches onnxruntime's."""
    out = Path(exported["export_dir"])
    vectors = np.load(out / "test_vectors.npz")
    raw, labels = vectors["images"][:80], vectors["labels"][:80]
    tflm = BlockPipeline(exported, [
        TFLMRunner(out / b["files"]["tflite"], verification_arena(b)) for b in exported["blocks"]
    ])
    ort = BlockPipeline(exported, [OnnxRunner(out / b["files"]["onnx"])
                                   for b in exported["blocks"]])
    lite = BlockPipeline(exported, [LiteRTRunner(out / b["files"]["tflite"])
                                   for b in exported["blocks"]])
    p_tflm, p_ort, p_lite = (p.predict(raw, "onepass") for p in (tflm, ort, lite))
    assert (p_tflm == p_lite).all()
    assert (p_tflm == p_ort).mean() >= 0.98
    assert (p_tflm == labels).mean() > 0.8


def test_contextual_block_exports_with_a_context_input(tmp_path):
    run = train_tiny(tmp_path / "run", contextual=[False, True], injection="bias")
    # two requantizations in a row (conv, then the context ADD): onnxruntime's float
    # requantization may differ from the integer TFLite path by up to 2 LSB there
    manifest = export_run(run, run / "export", ExportOptions(verify_samples=30, max_lsb=2))
    b1 = manifest["blocks"][1]
    assert manifest["agreement"]["blocks"][1]["tflm"]["per_output"]["features"] == 0
    assert b1["contextual"] and [t["name"] for t in b1["inputs"]] == ["features_in", "context"]
    assert manifest["modes"] == ["multipass"]
    assert abs(manifest["accuracy"]["int8"]["multipass"]
               - manifest["accuracy"]["float"]["multipass"]) <= 0.02
    assert manifest["agreement"]["passed"], manifest["agreement"]["failures"]


def test_l2_norm_too_large_for_int32_sum_of_squares(tmp_path):
    cfg = TrainAppConfig()
    cfg.data = DataGenConfig(dataset="digits", max_train_samples=64)
    # block 1 normalises 8 * 8 * 520 = 33280 values: 255^2 * 33280 passes int32
    cfg.model = ModelConfig(blocks=[[1, 520, 1], [1, 4, 1]], norm="l2")
    cfg.trainer = TrainerConfig(epochs=1, progress=False)
    train_run(cfg, tmp_path)  # one epoch on 64 images: may end at chance level
    with pytest.raises(UnsupportedLayerError, match=r"block 1: L2_NORMALIZATION over 33280 "
                                                    r"input values: .* int32"):
        export_run(tmp_path, tmp_path / "export", ExportOptions(allow_untrained=True))
    assert not (tmp_path / "export").exists()
    assert export_main([str(tmp_path), "--int8", "--allow-untrained"]) == 2


def test_nothing_half_written_on_failure(run_dir, tmp_path, monkeypatch):
    def boom(graph):
        raise RuntimeError("disk full")

    monkeypatch.setattr(exporter_mod, "write_onnx", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        export_run(run_dir, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_cli_errors(tmp_path, capsys):
    assert export_main([str(tmp_path / "missing"), "--int8"]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "checkpoint.pt").write_bytes(b"garbage")
    assert export_main([str(tmp_path), "--int8"]) == 2
    assert "is damaged: it does not end with a zip directory" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        export_main([str(tmp_path), "--format", "coreml"])


def test_cli_verification_threshold_fails_loudly(run_dir, tmp_path, capsys):
    code = export_main([str(run_dir), "--int8", "--out", str(tmp_path / "x"), "--max-lsb", "0",
                        "--verify-samples", "40"])
    captured = capsys.readouterr()
    assert code == 3
    assert "onnxruntime differs from litert_ref" in captured.err


def test_float_reference_export(run_dir, tmp_path):
    manifest = export_run(run_dir, tmp_path / "f", ExportOptions(int8=False, verify_samples=20))
    assert manifest["int8"] is False
    acc = manifest["accuracy"]
    assert abs(acc["exported_float"]["onepass"] - acc["float"]["onepass"]) < 1e-6
    for row in manifest["agreement"]["blocks"]:
        assert row["onnxruntime"]["max_diff"] < 1e-3 and row["tflm"]["max_diff"] < 1e-3


def test_cli_prints_one_accuracy_when_modes_are_one_computation(run_dir, tmp_path, capsys):
    assert export_main([str(run_dir), "--int8", "--out", str(tmp_path / "x"),
                        "--verify-samples", "20"]) == 0
    out = capsys.readouterr().out
    assert "accuracy  float: onepass = multipass " in out
    assert "accuracy   int8: onepass = multipass " in out and "multipass, onepass" not in out
