"""``ctxconv-predict``: a user's images, classified by name on every backend."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ctxconv.blockgraph.bundle import load_export
from ctxconv.blockgraph.pipeline import BlockPipeline
from ctxconv.predict.cli import PREDICT_BACKENDS, main
from ctxconv.runtimes.factory import make_runners


@pytest.fixture(scope="module")
def vectors(digits_export) -> tuple[Path, np.ndarray, np.ndarray, list[str]]:
    """The export, 6 raw test images, the reference kernels' classes, the class names."""
    export = Path(digits_export["export_dir"])
    bundle = load_export(export)
    raw, _ = bundle.test_vectors(6)
    pipe = BlockPipeline(bundle.manifest, make_runners(bundle, "reference"))
    preds = pipe.predict(raw, bundle.manifest["modes"][0])
    return export, raw, preds, list(digits_export["dataset"]["class_names"])


@pytest.mark.parametrize("backend", PREDICT_BACKENDS)
def test_every_backend_names_the_reference_class_of_each_image(vectors, backend, tmp_path,
                                                               capsys):
    export, raw, preds, names = vectors
    np.save(tmp_path / "batch.npy", raw[:4])  # a batch (N, H, W, C)
    np.save(tmp_path / "one.npy", raw[4, :, :, 0])  # one image (H, W)
    out = tmp_path / "p.json"
    assert main([str(export), str(tmp_path / "batch.npy"), str(tmp_path / "one.npy"),
                 "--backend", backend, "--json", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    want = [f"{tmp_path / 'batch.npy'}[{i}]: {names[p]} (class {p})" for i, p in
            enumerate(preds[:4])] + [f"{tmp_path / 'one.npy'}: {names[preds[4]]} "
                                     f"(class {preds[4]})"]
    assert lines == want
    record = json.loads(out.read_text())
    assert [r["class"] for r in record["images"]] == [int(p) for p in preds[:5]]
    assert record["backend"] == backend


def test_a_png_is_converted_resized_and_scaled_to_the_dataset_range(vectors, tmp_path, capsys):
    """digits stores 0..16: a 0..255 picture is scaled; an RGB 32x32 one is made grey 8x8."""
    export, raw, preds, names = vectors
    grey = (raw[5, :, :, 0].astype(np.float64) * 255 / 16).round().astype(np.uint8)
    Image.fromarray(grey, "L").save(tmp_path / "same.png")
    big = np.asarray(Image.fromarray(grey, "L").resize((32, 32), Image.NEAREST).convert("RGB"))
    Image.fromarray(big).save(tmp_path / "big.png")
    assert main([str(export), str(tmp_path / "same.png"), str(tmp_path / "big.png"),
                 "--json", str(tmp_path / "p.json")]) == 0
    same, resized = capsys.readouterr().out.splitlines()
    bundle = load_export(export)  # the picture's scores are the raw image's, exactly
    pipe = BlockPipeline(bundle.manifest, make_runners(bundle, "reference"))
    want = pipe.scores(pipe.quantize_images(raw[5:6]), bundle.manifest["modes"][0])[0]
    got = json.loads((tmp_path / "p.json").read_text())["images"][0]["scores"]
    assert got == [float(v) for v in want]
    assert same == f"{tmp_path / 'same.png'}: {names[preds[5]]} (class {preds[5]})  " \
                   "(scaled 0..255 to the model's 0..16)"
    assert "converted RGB to L; resized 32x32 to 8x8; scaled 0..255" in resized


@pytest.mark.parametrize(("make", "message"), [
    (lambda d: d / "missing.png", "missing.png: no such file"),
    (lambda d: _write(d / "bad.png", b"not a png"), "bad.png: not a readable image"),
    (lambda d: _save(d / "shape.npy", np.zeros((5, 5), np.uint8)),
     r"shape.npy: shape \(5, 5\); the model reads \(8, 8, 1\) or \(8, 8\)"),
    (lambda d: _save(d / "range.npy", np.full((8, 8), 200, np.int64)),
     r"range.npy: pixels must be integers in 0..16"),
    (lambda d: _save(d / "float.npy", np.zeros((8, 8), np.float32)), "must be integers"),
    (lambda d: _write(d / "image.txt", b"1"), "unknown image type .txt"),
])  # fmt: skip
def test_unusable_images_are_one_line_errors(vectors, tmp_path, capsys, make, message):
    export = vectors[0]
    assert main([str(export), str(make(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert re.search(message, err), err


def test_bad_export_mode_and_missing_c_are_one_line_errors(vectors, tmp_path, capsys):
    export, raw, _, _ = vectors
    np.save(tmp_path / "x.npy", raw[0])
    assert main([str(tmp_path / "nowhere"), str(tmp_path / "x.npy")]) == 2
    assert main([str(export), str(tmp_path / "x.npy"), "--mode", "twopass"]) == 2
    assert "--mode twopass: the export runs" in capsys.readouterr().err
    copy = tmp_path / "export"
    shutil.copytree(export, copy)
    shutil.rmtree(copy / "c")
    manifest = json.loads((copy / "manifest.json").read_text())
    assert main([str(copy), str(tmp_path / "x.npy"), "--backend", "c"]) == 2
    err = capsys.readouterr().err
    assert manifest and "error: " in err and len(err.strip().splitlines()) == 1, err


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _save(path: Path, arr: np.ndarray) -> Path:
    np.save(path, arr)
    return path
