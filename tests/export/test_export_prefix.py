"""Models whose first contextual block is not the last one: every later block runs once per
candidate context on that candidate's features (calibration, pipeline, verification)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_runs import train_tiny

from ctxconv.blockgraph.bundle import load_export
from ctxconv.blockgraph.pipeline import BlockPipeline
from ctxconv.export.exporter import ExportOptions, export_run
from ctxconv.export.fold import FloatBlock, float_forward
from ctxconv.export.quantize import calibrate
from ctxconv.export.verify import verification_arena
from ctxconv.runtimes.factory import make_runners
from ctxconv.runtimes.runners import TFLMRunner
from ctxconv.train.checkpoint import CHECKPOINT_NAME, load_checkpoint, restore_model
from ctxconv.train.inference import assert_label_free, multipass_scores

CONTEXTS = {"first": [True, False], "all": [True, True]}


@pytest.fixture(scope="module", params=sorted(CONTEXTS))
def prefix_export(request, tmp_path_factory) -> tuple[Path, dict]:
    """A tiny digits model with block 0 contextual, exported to int8 (60 test images)."""
    run = train_tiny(tmp_path_factory.mktemp(f"prefix_{request.param}") / "run", epochs=2,
                     contextual=CONTEXTS[request.param], injection="bias")
    # onnxruntime may differ by 2 LSB after the chained requantizations (see test_export)
    manifest = export_run(run, run / "export",
                          ExportOptions(verify_samples=40, test_samples=60, max_lsb=2))
    return run, manifest


def test_export_verifies_every_block_in_every_runtime(prefix_export):
    _, manifest = prefix_export
    assert manifest["modes"] == ["multipass"]  # block 0's output depends on the context
    agreement = manifest["agreement"]
    assert [row["block"] for row in agreement["blocks"]] == ["block0", "block1"]
    for row in agreement["blocks"]:
        # the reference here is LiteRT's reference kernels: its FULLY_CONNECTED of the context
        # (the per-class bias) rounds once, TFLM's twice, so a tie moves the bias, and the
        # features after the ADD, by 1 LSB (our kernels equal TFLM exactly: test below)
        assert row["tflm"]["per_output"]["features"] <= 1, row
        assert row["tflm"]["per_output"]["scores"] <= 1, row
        assert row["torch_float"]["features"]["mean"] < 0.5, row
    assert agreement["top1"]["multipass"]["tflm"] == 1.0
    assert agreement["top1"]["multipass"]["torch_float"] >= 0.9
    assert agreement["passed"], agreement["failures"]
    acc = manifest["accuracy"]
    assert acc["float"]["multipass"] > 0.5  # learned something: the check below means a lot
    assert abs(acc["int8"]["multipass"] - acc["float"]["multipass"]) <= 0.05


def test_pipeline_scores_follow_torch_multipass(prefix_export):
    """The int8 pipeline (reference kernels) against torch's block_scores reference: per
    candidate, block 1 runs on block 0's features under that candidate."""
    run, manifest = prefix_export
    bundle = load_export(run / "export")
    raw, _ = bundle.test_vectors()
    pipe = BlockPipeline(bundle.manifest, make_runners(bundle, "reference"))
    got = pipe.scores(pipe.quantize_images(raw), "multipass")
    model = restore_model(load_checkpoint(run / CHECKPOINT_NAME), run / CHECKPOINT_NAME).eval()
    x = BlockPipeline({**manifest, "int8": False}, []).quantize_images(raw)
    want = multipass_scores(model, torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.95
    spread = want.max() - want.min()
    assert np.abs(got - want).mean() < 0.05 * spread, np.abs(got - want).mean() / spread


def test_reference_kernels_and_tflm_pipelines_are_bit_exact(prefix_export):
    run, _ = prefix_export
    bundle = load_export(run / "export")
    raw, _ = bundle.test_vectors(20)
    ref = BlockPipeline(bundle.manifest, make_runners(bundle, "reference"))
    tflm = BlockPipeline(bundle.manifest, [
        TFLMRunner(bundle.path / b["files"]["tflite"], verification_arena(b))
        for b in bundle.blocks])
    x = ref.quantize_images(raw)
    np.testing.assert_array_equal(ref.score_sums(x, "multipass"), tflm.score_sums(x, "multipass"))


def test_export_is_label_free(prefix_export):
    run, _ = prefix_export
    bundle = load_export(run / "export")
    raw, labels = bundle.test_vectors()
    pipe = BlockPipeline(bundle.manifest, make_runners(bundle, "reference"))
    preds = assert_label_free(lambda _labels: torch.as_tensor(pipe.predict(raw, "multipass")),
                              torch.as_tensor(labels))
    assert (preds.numpy() == labels).mean() > 0.5


def test_onepass_is_refused_with_the_reason(prefix_export):
    run, _ = prefix_export
    bundle = load_export(run / "export")
    pipe = BlockPipeline(bundle.manifest, make_runners(bundle, "reference"))
    with pytest.raises(ValueError, match=r"mode 'onepass' is not available for this export; "
                                         r"available: \['multipass'\]"):
        pipe.score_sums(pipe.quantize_images(bundle.test_vectors(2)[0]), "onepass")


def _block(index: int, size: int, cin: int, cout: int, k: int, rng, contextual: bool
           ) -> FloatBlock:
    return FloatBlock(
        index=index, pool=1, in_size=size, in_channels=cin,
        conv_weight=rng.normal(size=(cout, cin, 3, 3)), conv_bias=rng.normal(size=cout),
        context_weight=rng.normal(scale=4.0, size=(cout, k)) if contextual else None,
        head_cell=1, head_grid=size, head_weight=rng.normal(size=(k, cout * size * size)),
        head_bias=rng.normal(size=k))  # fmt: skip


def test_calibration_covers_every_candidates_features():
    """Block 1's input range is block 0's output range over all K candidate contexts (and so
    is block 0's features range), not over the first context alone."""
    rng = np.random.default_rng(0)
    k, n = 4, 16
    blocks = [_block(0, 5, 1, 3, k, rng, True), _block(1, 5, 3, 2, k, rng, False)]
    images = rng.normal(size=(n, 5, 5, 1))
    ranges = calibrate(blocks, images, k)
    per_context = [float_forward(blocks[0], images, np.eye(k)[[c] * n])[0] for c in range(k)]
    top = max(f.max() for f in per_context)
    assert top > per_context[0].max()  # the contexts matter in this model
    assert ranges[1].values["input"][1] == pytest.approx(top)
    assert ranges[0].values["features"][1] == pytest.approx(top)
    scores = [float_forward(blocks[1], f)[1] for f in per_context]
    assert ranges[1].values["scores"] == pytest.approx((min(s.min() for s in scores),
                                                        max(s.max() for s in scores)))
