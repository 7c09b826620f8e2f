"""Whole-block training with int8 weights updated in place: the numpy step against the float
block's gradients, learning from scratch, the SRAM/flash accounting, and the same step in C
(host build, and Cortex-M4 under QEMU) bit-exact with the numpy model."""

import json
import shutil

import numpy as np
import pytest

from ctxconv.blockgraph.geometry import BlockGeometry
from ctxconv.ondevice import qas
from ctxconv.ondevice.block import TrainableBlock
from ctxconv.ondevice.cli import main as train_cli
from ctxconv.ondevice.inplace import (
    FLASH_PAGES,
    inplace_buffers,
    inplace_layout,
    inplace_report,
    weight_pages,
)
from ctxconv.ondevice.losses import softmax_ce
from ctxconv.ondevice.qas import Int8Block, exp_f32, qas_step
from ctxconv.ondevice.scratch import init_block
from ctxconv.runtimes.firmware.toolchain import missing_arm_tools

ARM_MISSING = missing_arm_tools()
needs_arm = pytest.mark.skipif(ARM_MISSING is not None, reason=str(ARM_MISSING))
needs_cc = pytest.mark.skipif(shutil.which("cc") is None,
                              reason="no C compiler: apt-get install -y gcc")
GEOM = BlockGeometry(in_size=8, in_channels=3, pool=2, kernel=3, filters=6, num_classes=10,
                     head_grid=2)


def _block(seed: int = 0) -> Int8Block:
    return init_block(GEOM, 0.05, -3, seed)


def _batch(b: int = 4, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.integers(-128, 128, (b, 8, 8, 3)).astype(np.int8),
            rng.integers(0, 10, b).astype(np.int64))


def test_exp_polynomial_is_float32_accurate():
    x = np.linspace(-80, 0, 20001, dtype=np.float32)
    rel = np.abs(exp_f32(x).astype(np.float64) - np.exp(x.astype(np.float64))) / np.exp(x)
    assert rel.max() < 1e-6


def test_step_follows_the_float_gradient(monkeypatch):
    """The int8 step is the float SGD step in each channel's units (QAS): step * s / lr
    equals the float block's gradient of the dequantized weights."""
    block, (x, y) = _block(), _batch()
    ref = TrainableBlock(GEOM, block.float_params())
    xf = (np.float32(block.in_scale) * (x.astype(np.float32) - block.in_zero_point))
    scores, cache = ref.forward(xf)
    loss_ref, ds = softmax_ce(scores, y)
    grads = ref.backward(ds, cache)
    steps = []
    real = qas.requantize
    monkeypatch.setattr(qas, "requantize", lambda q, st, s, u: steps.append((st, s)) or
                        real(q, st, s, u))
    lr = 0.01
    r = qas_step(block.copy(), x, y, lr, 0)
    assert r.loss == pytest.approx(loss_ref, rel=1e-5)
    (conv_step, conv_s), (head_step, head_s) = steps
    np.testing.assert_allclose(conv_step * conv_s[:, None] / lr,
                               grads["conv_weight"].reshape(GEOM.filters, -1),
                               rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(head_step * head_s[:, None] / lr, grads["head_weight"],
                               rtol=1e-3, atol=1e-6)


def test_step_updates_int8_in_place_and_rescales():
    block, (x, y) = _block(), _batch()
    before = block.copy()
    r = qas_step(block, x, y, 5.0, 0)  # a huge step: channels leave [-127, 127]
    assert block.conv_q.dtype == np.int8 and block.head_q.dtype == np.int8
    assert np.abs(block.conv_q.astype(int)).max() <= 127
    assert r.rescaled > 0 and (block.conv_s >= before.conv_s).all()
    assert (block.conv_s > before.conv_s).any() or (block.head_s > before.head_s).any()
    again = before.copy()
    qas_step(again, x, y, 5.0, 0)  # deterministic: same draws for the same step and seed
    assert np.array_equal(again.conv_q, block.conv_q)
    nearest = before.copy()
    qas_step(nearest, x, y, 1e-6, 0, rounding="nearest")  # far below half a step: no change
    assert np.array_equal(nearest.conv_q, before.conv_q)
    sto = before.copy()
    qas_step(sto, x, y, 1e-3, 0)  # stochastic rounding still moves some weights
    assert (sto.conv_q != before.conv_q).any()


def test_step_errors():
    block, (x, y) = _block(), _batch()
    with pytest.raises(ValueError, match="unknown rounding 'up'"):
        qas_step(block, x, y, 0.1, 0, rounding="up")
    with pytest.raises(ValueError, match=r"block input must be int8 \(N, 8, 8, 3\)"):
        qas_step(block, x.astype(np.float32), y, 0.1, 0)
    ctx = BlockGeometry(8, 3, 1, 3, 4, 10, 2, contextual=True)
    with pytest.raises(ValueError, match="context-free blocks only"):
        init_block(ctx, 0.1, 0, 0)
    with pytest.raises(ValueError, match="context-free blocks only"):
        inplace_buffers(ctx, 1, "ram")
    with pytest.raises(ValueError, match="conv_q has shape"):
        Int8Block(GEOM, np.zeros((2, 2), np.int8), block.conv_s, block.conv_b, block.head_q,
                  block.head_s, block.head_b, 0.1, 0)


# ----------------------------------------------------------------------- accounting


def test_no_full_gradient_and_weights_in_sram_or_flash():
    ram = {b.name: b.size for b in inplace_buffers(GEOM, 4, "ram")}
    assert ram["int8 weights (trained, in SRAM)"] == 6 * 27 + 10 * 24
    assert ram["channel gradient (fp32, one channel)"] == 4 * GEOM.taps  # one channel only
    assert not any("optimizer" in n or n.startswith("gradients") for n in ram)
    flash = {b.name: b.size for b in inplace_buffers(GEOM, 4, "flash", page_bytes=4096)}
    assert "int8 weights (trained, in SRAM)" not in flash and flash["flash page buffer"] == 4096
    assert inplace_layout(GEOM, 4, "ram").peak_bytes < inplace_layout(GEOM, 64, "ram").peak_bytes
    with pytest.raises(ValueError, match="unknown weight store 'eeprom'"):
        inplace_buffers(GEOM, 1, "eeprom")
    assert weight_pages(GEOM, FLASH_PAGES["nrf52840"]) == 2


def _model(bundle):
    from ctxconv.ondevice.accounting import ExportModel
    from ctxconv.ondevice.loading import geometries

    return ExportModel(geometries(bundle), bundle.graphs, [len(t) for t in bundle.tflite],
                       bundle.tflite)


def test_report_every_digits_block_fits_the_nrf52840(digits_export):
    from ctxconv.blockgraph.bundle import load_export
    from ctxconv.sim.profiles import load_profile

    bundle = load_export(digits_export["export_dir"])
    model, nrf = _model(bundle), load_profile("nrf52840")
    for i in range(len(bundle.graphs)):
        ram = inplace_report(model, i, nrf, 1, "ram")
        assert ram["fits"] and ram["trained_fraction"] == 1.0 and ram["largest_batch"] >= 1
        assert ram["trained_params"] == model.geoms[i].param_count()
        flash = inplace_report(model, i, nrf, 1, "flash")
        assert flash["sram_bytes"] < ram["sram_bytes"] + 4096
        assert flash["flash_pages_written_per_step"] >= 2 and flash["max_steps_by_endurance"]
        assert flash["ms_per_step"] > ram["ms_per_step"]  # page erases cost time
    with pytest.raises(ValueError, match="stm32f746: no flash page figures known"):
        inplace_report(model, 0, load_profile("stm32f746"), 1, "flash")


# ----------------------------------------------------------------------- learning + C


def test_learns_digits_from_scratch_block_by_block(digits_export):
    from ctxconv.blockgraph.bundle import load_export
    from ctxconv.ondevice.scratch import train_blocks

    bundle = load_export(digits_export["export_dir"])
    rep = train_blocks(bundle, epochs=1, batch=8, lr=0.05, from_scratch=True)
    b0, b1 = rep["blocks"]
    assert b0["last_loss"] < b0["first_loss"] and b1["last_loss"] < b1["first_loss"]
    assert rep["test_accuracy"] > 0.8  # one epoch on 1000 images; the CLI's 3 reach > 95 %


def _check(digits_export, tmp_path, emulate: bool, **kw):
    from ctxconv.blockgraph.bundle import load_export
    from ctxconv.ondevice.c_check import check_training
    from ctxconv.sim.profiles import load_profile

    bundle = load_export(digits_export["export_dir"])
    return check_training(bundle, profile=load_profile("nrf52840"), emulate=emulate,
                          work_dir=tmp_path, **kw)


@needs_cc
@pytest.mark.parametrize("index,kw", [(0, {"from_scratch": True}),
                                      (1, {"rounding": "nearest", "lr": 0.5})])
def test_c_step_on_the_host_is_bit_exact(digits_export, tmp_path, index, kw):
    rep = _check(digits_export, tmp_path, False, blocks=index, steps=2, batch=3, **kw)
    h = rep["blocks"][0]["host"]
    assert h["int8_bit_exact"] and h["correct_equal"] and h["inference_params_bit_exact"], h
    assert h["max_rel_error"] <= 1e-5
    assert rep["host"]["bit_exact"] and rep["emulated"] is None


@needs_arm
def test_c_step_on_the_emulated_cortex_m4(digits_export, tmp_path):
    rep = _check(digits_export, tmp_path, True, blocks=1, steps=2, batch=2)
    b, e = rep["blocks"][0], rep["emulated"]
    assert b["emulated"]["int8_bit_exact"] and b["emulated"]["max_rel_error"] <= 1e-5
    assert e["bit_exact"] and e["target"].startswith("cortex-m4f")
    # block 1's weights (and their inference parameters) live in RAM when it learns
    assert e["static_ram_bytes"] >= b["int8_params"] + e["training_buffers_ram_bytes"] > 0
    assert e["ram_bytes"] > 0 and b["emulated"]["instructions_per_step"] > 0
    assert b["emulated"]["modelled_sram_bytes"] == b["planned"]["sram_bytes"]


def test_check_training_errors(digits_export, tmp_path):
    with pytest.raises(ValueError, match="block 5 does not exist"):
        _check(digits_export, tmp_path, False, blocks=5)
    with pytest.raises(ValueError, match="unknown rounding 'up'"):
        _check(digits_export, tmp_path, False, blocks=0, rounding="up")
    with pytest.raises(ValueError, match="unknown update set 'film'"):
        _check(digits_export, tmp_path, False, blocks=0, update="film")
    with pytest.raises(ValueError, match="in increasing order"):
        _check(digits_export, tmp_path, False, blocks=[1, 0])


def test_cli_int8(digits_export, tmp_path, capsys):
    out = tmp_path / "r.json"
    args = [str(digits_export["export_dir"]), "--weights", "int8", "--batch", "4",
            "--json", str(out)]
    assert train_cli(args) == 0
    rep = json.loads(out.read_text())
    assert rep["fits"] and all(b["store"] == "ram" for b in rep["blocks"])
    text = capsys.readouterr().out
    assert "all weights int8 updated in place" in text
    assert train_cli([*args, "--weight-store", "flash"]) == 0
    assert "pages erased and written per step" in capsys.readouterr().out
    assert train_cli([*args, "--epochs", "-1"]) == 2
    assert "--epochs must be >= 0" in capsys.readouterr().err
    assert train_cli([*args, "--batch", "100000"]) == 4
    assert "DOES NOT FIT" in capsys.readouterr().out


# ------------------------------------------------- learning in C: accuracy of its weights


@needs_cc
def test_c_trained_block_evaluates_as_the_simulators(digits_export, tmp_path):
    """Whole shuffled epochs in C: the weights the C returns score on the test vectors what
    the simulator's block scores, and what block-by-block training reaches for block 0."""
    from ctxconv.blockgraph.bundle import load_export
    from ctxconv.ondevice.scratch import epoch_batches, train_blocks

    rep = _check(digits_export, tmp_path, False, blocks=0, batch=8, lr=0.05, seed=0,
                 from_scratch=True, epochs=1)["blocks"][0]
    bundle = load_export(digits_export["export_dir"])
    n = len(bundle.train_vectors()[1])
    assert rep["steps"] == len(epoch_batches(n, 1, 8, 0)) == n // 8
    h, sim = rep["host"], rep["simulator"]
    assert h["int8_bit_exact"] and h["correct_equal"], h
    assert h["test_accuracy"] == sim["test_accuracy"] and h["test_accuracy_equal"]
    assert sim["test_accuracy"] > rep["test_accuracy_initial"] + 0.3  # it learned
    assert h["last_loss"] < h["first_loss"]
    ref = train_blocks(bundle, epochs=1, batch=8, lr=0.05, seed=0, blocks=1)
    assert h["test_accuracy"] == ref["blocks"][0]["test_accuracy_block"]


def test_block_from_state_is_evaluated_like_the_block():
    from ctxconv.ondevice.c_check import STATE, block_from_state
    from ctxconv.ondevice.scratch import block_accuracy

    block, (x, y) = _block(), _batch(16)
    qas_step(block, x, y, 0.05, 0)
    got = block_from_state({n: getattr(block, n).copy() for n in STATE}, _block(1))
    np.testing.assert_array_equal(got.goodness(x), block.goodness(x))
    assert block_accuracy(got, x, y) == block_accuracy(block, x, y)


@needs_arm
def test_c_trained_block_on_the_emulated_cortex_m4_evaluates_as_the_simulators(
        digits_export, tmp_path):
    rep = _check(digits_export, tmp_path, True, blocks=0, steps=3, batch=4,
                 from_scratch=True)["blocks"][0]
    e = rep["emulated"]
    assert e["int8_bit_exact"] and e["test_accuracy"] == rep["simulator"]["test_accuracy"]
    assert e["instructions_total"] >= 3 * e["instructions_per_step"] > 0
    assert e["device_seconds_lower_bound"] == pytest.approx(
        e["instructions_total"] / e["clock_hz"])
    assert rep["planned_device_seconds"] == pytest.approx(3 * rep["planned"]["ms_per_step"]
                                                          / 1e3)


@needs_arm
def test_cli_firmware_epochs(digits_export, tmp_path, capsys):
    out = tmp_path / "r.json"
    args = [str(digits_export["export_dir"]), "--weights", "int8", "--batch", "8", "--lr",
            "0.05", "--from-scratch", "--epochs", "1", "--firmware-block", "0",
            "--firmware-epochs", "1", "--json", str(out)]
    assert train_cli(args) == 0
    fw = json.loads(out.read_text())["firmware"]["blocks"][0]
    assert fw["epochs"] == 1 and fw["emulated"]["equals_block_by_block"]
    text = capsys.readouterr().out
    assert "emulated C" in text and "(equal)" in text and "the same" in text
    assert "simulated nrf52840 time" in text
    assert train_cli([*args, "--firmware-epochs", "-1"]) == 2
    assert "--firmware-epochs >= 0" in capsys.readouterr().err
