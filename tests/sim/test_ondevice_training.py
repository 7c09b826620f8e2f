"""On-device forward-only training in the simulator: numerics vs torch, accuracy vs the
host trainer, training memory accounting, and the ctxconv-sim-train CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ctxconv.ondevice import (
    BlockGeometry,
    NamedBuffer,
    TrainableBlock,
    accuracy,
    backprop_layout,
    block_from_export,
    forward_only_layout,
    largest_batch,
    local_step,
    make_optimizer,
    place,
    wrong_labels,
)
from ctxconv.ondevice.cli import main as train_cli
from ctxconv.train.blocks import ContextualConvBlock

K = 5


def _to_sim(tb: ContextualConvBlock, geom: BlockGeometry) -> dict[str, np.ndarray]:
    """Torch block parameters in the simulator's layout (conv OHWI, head NHWC order)."""
    conv = tb.body.conv
    p = {"conv_weight": conv.conv.weight.detach().numpy().transpose(0, 2, 3, 1),
         "conv_bias": conv.conv.bias.detach().numpy()}
    if geom.contextual:
        p["context_weight"] = conv.context_bias.weight.detach().numpy()
    hw = tb.goodness.linear.weight.detach().numpy()
    g = geom.head_grid
    p["head_weight"] = hw.reshape(-1, geom.filters, g, g).transpose(0, 2, 3, 1).reshape(
        hw.shape[0], -1)
    p["head_bias"] = tb.goodness.linear.bias.detach().numpy()
    return {k: np.array(v, np.float32) for k, v in p.items()}


def _torch_loss(tb, xt, yt, neg, objective):
    if objective == "softmax":
        return F.cross_entropy(tb.all_class_goodness(xt), yt)
    eye = torch.eye(K)
    c = torch.cat([eye[yt], eye[torch.from_numpy(neg)]])
    if tb.is_contextual:
        good = tb.goodness(tb(torch.cat([xt, xt]), c), c)
    else:
        h = tb(xt)
        good = tb.goodness(torch.cat([h, h]), c)
    b = len(yt)
    return F.binary_cross_entropy_with_logits(good, torch.cat([torch.ones(b), torch.zeros(b)]))


CASES = [(o, c, p, "softmax") for o in ("sgd", "adam") for c in (False, True) for p in (1, 2)]
CASES += [("sgd", False, 2, "bce"), ("adam", True, 1, "bce")]


@pytest.mark.parametrize("optimizer,contextual,pool,objective", CASES)
def test_step_matches_torch(optimizer: str, contextual: bool, pool: int, objective: str):
    from ctxconv.train.trainer import TrainerConfig
    from ctxconv.train.trainer import make_optimizer as host_optimizer

    torch.manual_seed(0)
    tb = ContextualConvBlock(3, 8, pool, 6, 3, K, injection="bias" if contextual else "none",
                             norm="none", max_grid=2)
    geom = BlockGeometry(8, 3, pool, 3, 6, K, tb.goodness.grid, contextual)
    sim = TrainableBlock(geom, _to_sim(tb, geom))
    host_opt = host_optimizer(tb.parameters(), TrainerConfig(optimizer=optimizer, lr=0.05))
    sim_opt = make_optimizer(optimizer, 0.05)
    rng = np.random.default_rng(1)
    for _ in range(2):  # the second step exercises momentum / Adam state
        x = rng.normal(size=(7, 8, 8, 3)).astype(np.float32)
        y = rng.integers(0, K, 7)
        neg = wrong_labels(y, K, rng)
        loss = _torch_loss(tb, torch.from_numpy(x.transpose(0, 3, 1, 2).copy()),
                           torch.from_numpy(y), neg, objective)
        host_opt.zero_grad()
        loss.backward()
        host_opt.step()
        res = local_step(sim, sim_opt, x, y, objective, negatives=neg)
        assert abs(res.loss - loss.item()) <= 1e-5 * abs(loss.item())
    ref = _to_sim(tb, geom)
    for name, want in ref.items():
        err = np.abs(sim.params[name] - want).max() / np.abs(want).max()
        assert err <= 1e-5, (name, err)


def test_digits_block_matches_host_trainer(tmp_path: Path):
    """Same init, batches and hyperparameters: simulator and host trainer within 1 point."""
    from ctxconv.train.data import load_datasets, make_loader
    from ctxconv.train.data_gen import DataGenConfig
    from ctxconv.train.model import ModelConfig, build_model
    from ctxconv.train.trainer import BlockwiseTrainer, TrainerConfig, _epoch_seed

    torch.manual_seed(0)
    data = DataGenConfig(dataset="digits", batch_size=64)
    train, val, test, _ = load_datasets(data)
    model = build_model(ModelConfig(blocks=[[1, 8, 3]], norm="none", max_grid=4))
    tb = model.blocks[0]
    geom = BlockGeometry(8, 1, 1, 3, 8, 10, tb.goodness.grid, False)
    sim = TrainableBlock(geom, _to_sim(tb, geom))
    cfg = TrainerConfig(epochs=3, optimizer="adam", lr=5e-3, lr_schedule="constant", progress=False)
    BlockwiseTrainer(model, cfg, data, tmp_path, seed=0).fit(train, val)
    opt = make_optimizer("adam", 5e-3)
    for epoch in range(cfg.epochs):
        loader = make_loader(train, data.batch_size, shuffle=True, seed=_epoch_seed(0, 0, epoch))
        for x, y in loader:
            local_step(sim, opt, x.permute(0, 2, 3, 1).numpy(), y.numpy())
    xt, yt = test.tensors
    with torch.no_grad():
        host = float((tb.all_class_goodness(xt).argmax(1) == yt).float().mean())
    ours = accuracy(sim, xt.permute(0, 2, 3, 1).numpy(), yt.numpy())
    assert host > 0.8
    assert abs(ours - host) <= 0.01, (ours, host)


# ------------------------------------------------------------------- memory accounting

GEOMS = [BlockGeometry(8, 1, 1, 3, 8, 10, 4), BlockGeometry(8, 8, 2, 3, 16, 10, 4),
         BlockGeometry(4, 16, 1, 3, 16, 10, 2, contextual=True)]


def _assert_no_overlap(buffers: list[NamedBuffer]):
    for i, a in enumerate(buffers):
        for b in buffers[i + 1:]:
            if a.overlaps(b):
                disjoint = a.offset + a.size <= b.offset or b.offset + b.size <= a.offset
                assert disjoint, (a, b)


@pytest.mark.parametrize("update", ["all", "head", "bias"])
@pytest.mark.parametrize("geom", GEOMS)
def test_forward_only_buffers_do_not_overlap(geom: BlockGeometry, update: str):
    layout = forward_only_layout(geom, 8, 8, "softmax", update, prefix_bytes=3000)
    _assert_no_overlap(layout.buffers)
    assert layout.peak_bytes <= layout.sum_bytes
    assert layout.peak_bytes == max(b.offset + -(-b.size // 16) * 16 for b in layout.buffers)
    sizes = layout.by_name()
    n = geom.param_count() if update == "all" else None
    if n is not None:
        assert sizes["weights (fp32, trained)"] == 4 * n
        assert sizes["optimizer state"] == 8 * n  # Adam: 2x
    _assert_no_overlap(backprop_layout(GEOMS, 8, 4).buffers)


def test_total_is_sum_when_all_live_together():
    bufs = [NamedBuffer(f"b{i}", s, 0, 2) for i, s in enumerate([100, 48, 4000, 17])]
    layout = place(bufs, ("a", "b", "c"))
    assert layout.peak_bytes == layout.sum_bytes == 112 + 48 + 4000 + 32
    _assert_no_overlap(layout.buffers)
    # weights, gradients and optimizer state all live at the update step
    geom = GEOMS[1]
    sizes = forward_only_layout(geom, 1, 4).by_name()
    assert sizes["gradients (fp32)"] == sizes["weights (fp32, trained)"] == 4 * geom.param_count()
    assert sizes["optimizer state"] == 4 * geom.param_count()  # SGD momentum: 1x


@pytest.mark.parametrize("geom", GEOMS)
def test_largest_batch_is_monotone(geom: BlockGeometry):
    def sram(b: int) -> int:
        return forward_only_layout(geom, b, 4).peak_bytes

    # the live bytes at every step only grow with the batch; the greedy peak stays close
    peaks = [sram(b) for b in range(1, 40)]
    assert all(b >= a - 256 for a, b in zip(peaks, peaks[1:], strict=False))
    assert peaks[-1] > peaks[0]
    previous = 0
    for limit in sorted((sram(1) - 1, sram(1), sram(5), 40_000, 100_000, 200_000, 400_000)):
        best = largest_batch(sram, limit)
        assert best >= previous  # more SRAM never gives a smaller batch
        assert all(sram(b) <= limit for b in range(1, best + 1))
        assert sram(best + 1) > limit
        previous = best
    assert largest_batch(sram, sram(1) - 1) == 0
    # fewer trained parameters never need more SRAM
    assert forward_only_layout(geom, 8, 8, update="head").peak_bytes <= sram(8) * 2
    assert forward_only_layout(geom, 8, 4, update="bias").peak_bytes < sram(8)


def test_backprop_needs_more_than_forward_only():
    worst = max(forward_only_layout(g, 8, 4).peak_bytes for g in GEOMS[:2])
    assert backprop_layout(GEOMS[:2], 8, 4).peak_bytes > worst


# ------------------------------------------------------------------------------ CLI


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> Path:
    """A tiny two-block digits run with its float (export-float) and int8 (export) exports."""
    from tiny_runs import train_tiny

    from ctxconv.export.exporter import ExportOptions, export_run
    from ctxconv.export.verify import VerificationError

    run = train_tiny(tmp_path_factory.mktemp("ondevice_run"), epochs=1)
    export_run(run, run / "export-float", ExportOptions(int8=False, verify_samples=20))
    try:  # cross-runtime agreement is tested elsewhere; the files are written either way
        export_run(run, run / "export", ExportOptions(verify_samples=20))
    except VerificationError:
        pass
    return run


def test_block_from_float_export_matches_graph(exports: Path):
    from ctxconv.blockgraph.bundle import load_export
    from ctxconv.runtimes.reference import run_graph

    bundle = load_export(exports / "export-float")
    block = block_from_export(bundle, 1)
    x = np.random.default_rng(0).normal(size=(5, 8, 8, 8)).astype(np.float32)
    want = run_graph(bundle.graphs[1], {"features_in": x})
    scores, _ = block.forward(x)
    np.testing.assert_allclose(scores, want["scores"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(block.features(x), want["features"], rtol=1e-4, atol=1e-5)
    q = block_from_export(exports / "export", 1)  # dequantized int8 weights: close
    assert np.abs(q.params["conv_weight"] - block.params["conv_weight"]).max() < 0.02


def test_cli_report_and_steps(exports: Path, tmp_path: Path, capsys):
    out = tmp_path / "r.json"
    rc = train_cli([str(exports / "export"), "--mcu", "nrf52840", "--batch", "4",
                    "--optimizer", "adam", "--steps", "20", "--json", str(out)])
    assert rc == 0
    rep = json.loads(out.read_text())
    assert [b["block"] for b in rep["blocks"]] == [0, 1]
    for b in rep["blocks"]:
        assert b["fits"] and b["largest_batch"] >= 4 and b["ms_per_step"] > 0
        assert b["steps"]["init"] == "export-float" and np.isfinite(b["steps"]["last_loss"])
    assert rep["blocks"][1]["flash_bytes"] > rep["blocks"][0]["flash_bytes"]
    assert rep["backprop"]["sram_bytes"] > max(b["sram_bytes"] for b in rep["blocks"])
    text = capsys.readouterr().out
    assert "backprop" in text
    assert "largest training batch per profile and block (0: not even batch 1 fits):" in text
    for name, sizes in rep["largest_batch_per_profile"].items():  # one labelled line each
        assert f"  {name:<10} block 0 {sizes[0]}, block 1 {sizes[1]}\n" in text
    for b in rep["blocks"]:
        s = b["steps"]
        assert s["loss_window"] == 2
        assert (f"block {b['block']}: 20 simulated steps, loss (mean of the first / last 2 "
                f"steps) {s['first_loss']:.4f} -> {s['last_loss']:.4f}") in text


def test_cli_errors_and_does_not_fit(exports: Path, tmp_path: Path, capsys):
    assert train_cli([str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert train_cli([str(exports / "export"), "--mcu", "nosuchchip"]) == 2
    assert "unknown MCU profile" in capsys.readouterr().err
    assert train_cli([str(exports / "export"), "--batch", "0"]) == 2
    assert train_cli([str(exports / "export"), "--batch", "100000"]) == 4
    assert "DOES NOT FIT" in capsys.readouterr().out


def test_ondevice_modules_import_without_torch():
    probe = (
        "import importlib, sys\n"
        "class _NoTorch:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' or name.startswith('torch.'):\n"
        "            raise ImportError('torch imported')\n"
        "sys.meta_path.insert(0, _NoTorch())\n"
        "importlib.import_module('ctxconv.ondevice')\n"
        "importlib.import_module('ctxconv.ondevice.cli')\n"
        "bad = [m for m in sys.modules if m.startswith(('torch', 'ctxconv.train'))]\n"
        "assert not bad, bad\n"
    )
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
