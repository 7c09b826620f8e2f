"""Label leakage, tested with teeth: predictions are identical (not close) when the labels
are shuffled or withheld, for the float model, the int8 export and the simulator; and the
guard catches a leak as small as one prediction in a hundred."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from ctxconv.train.inference import LabelLeakError, assert_label_free, available_modes, predict
from ctxconv.train.model import ModelConfig, build_model


def _model(contextual=None, goodness="linear"):
    torch.manual_seed(7)
    cfg = ModelConfig(blocks=[[1, 8, 3], [2, 8, 3]], num_classes=10, in_channels=1,
                      image_size=8, contextual=contextual, goodness=goodness)
    return build_model(cfg).eval()


def _float_predict(model, x, mode):
    def run(labels):
        data = TensorDataset(x) if labels is None else TensorDataset(x, labels)
        return predict(model, DataLoader(data, batch_size=32), mode)
    return run


@pytest.mark.parametrize("contextual,goodness", [
    (None, "linear"), ([False, True], "linear"), ([True, False], "linear"),
    ([True, False], ["energy", "linear"]),  # forward-forward block, then a classifier
])
def test_float_model_is_label_free(contextual, goodness):
    model = _model(contextual, goodness)
    x = torch.randn(100, 1, 8, 8)
    y = torch.randint(0, 10, (100,))
    for mode in available_modes(model):
        assert_label_free(_float_predict(model, x, mode), y)


def test_guard_catches_one_leaked_prediction_in_a_hundred():
    """A careless procedure that looks at the label of one image in a hundred."""
    model = _model()
    x = torch.randn(100, 1, 8, 8)
    y = torch.randint(0, 10, (100,))
    honest = _float_predict(model, x, "onepass")

    def leaky(labels):
        preds = honest(labels).clone()
        if labels is not None:
            preds[37] = labels[37]  # the leak: one prediction copies its label
        return preds

    with pytest.raises(LabelLeakError, match=r"1 of 100 predictions changed when the labels "
                                             r"were (shuffled|withheld)"):
        assert_label_free(leaky, y, seed=3)


def _shuffled_copy(src: Path, dst: Path, seed: int) -> np.ndarray:
    """A signed copy of the export whose test labels are shuffled; returns them."""
    from ctxconv.blockgraph.manifest import seal_manifest, sha256

    shutil.copytree(src, dst)
    with np.load(src / "test_vectors.npz") as data:
        raw, labels = data["images"], data["labels"]
    shuffled = np.random.default_rng(seed).permutation(labels)
    np.savez_compressed(dst / "test_vectors.npz", images=raw, labels=shuffled)
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest["files"]["test_vectors.npz"] = sha256(dst / "test_vectors.npz")
    (dst / "manifest.json").write_text(json.dumps(seal_manifest(manifest)))
    return shuffled


@pytest.mark.parametrize("backend", ["reference", "onnxruntime"])
def test_int8_accuracy_follows_shuffled_labels_exactly(digits_export, tmp_path, backend):
    """The int8 path that reads the labels (ctxconv-sim's accuracy, every mode): on an
    export whose test labels were shuffled, its accuracy equals the predictions of the
    untouched export scored against the shuffled labels, to the image."""
    from ctxconv.blockgraph.bundle import load_export
    from ctxconv.blockgraph.pipeline import BlockPipeline
    from ctxconv.runtimes.factory import make_runners
    from ctxconv.sim.simulate import SimOptions, simulate

    src = Path(digits_export["export_dir"])
    shuffled = _shuffled_copy(src, tmp_path / "export", seed=0)
    bundle = load_export(src)
    raw, labels = bundle.test_vectors()
    assert (shuffled != labels).mean() > 0.5  # the shuffle really moved the labels
    pipe = BlockPipeline(bundle.manifest, make_runners(bundle, "reference"))
    for mode in bundle.manifest["modes"]:
        preds = pipe.predict(raw, mode)
        opts = SimOptions(mcu="nrf52840", mode=mode, backend=backend, measure_tflm=False,
                          bit_exact_images=0)
        assert simulate(src, opts)["accuracy"] == float((preds == labels).mean())
        got = simulate(tmp_path / "export", opts)["accuracy"]
        assert got == float((preds == shuffled).mean()), (mode, backend)
