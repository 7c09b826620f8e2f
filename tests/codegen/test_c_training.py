"""The exported library learns: its training API (``c/ctxconv_train.h``) against the
simulator bit for bit, every update set, blocks in sequence, inference with the new
weights, the blocks it refuses (with the reason), and the API's error codes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from ctxconv.blockgraph.bundle import load_export
from ctxconv.blockgraph.trainable import device_bias, training_state, with_state
from ctxconv.ondevice.c_check import check_training, compare_training, expected_params
from ctxconv.ondevice.cli import main as train_cli
from ctxconv.ondevice.qas import Int8Block, qas_step
from ctxconv.runtimes.firmware.toolchain import missing_arm_tools
from ctxconv.sim.profiles import load_profile

ARM_MISSING = missing_arm_tools()
needs_arm = pytest.mark.skipif(ARM_MISSING is not None, reason=str(ARM_MISSING))
needs_cc = pytest.mark.skipif(shutil.which("cc") is None, reason="apt-get install -y gcc")
WARNINGS = ("-std=c99", "-O2", "-Wall", "-Wextra", "-Wconversion", "-pedantic", "-Werror")


def _bundle(export: dict):
    return load_export(export["export_dir"])


def _run(bundle, tmp_path, **kw):
    kw.setdefault("emulate", False)
    return check_training(bundle, profile=load_profile("nrf52840"), work_dir=tmp_path, **kw)


@needs_cc
def test_every_block_in_sequence_from_scratch_is_bit_exact(digits_export, tmp_path):
    """Block 1 learns on the features of block 0 as the C holds them after its training;
    the library then classifies with both new blocks exactly as the reference kernels do on
    the trained graphs."""
    rep = _run(_bundle(digits_export), tmp_path, blocks="all", steps=3, batch=3,
               from_scratch=True, eval_images=12)
    assert [b["block"] for b in rep["blocks"]] == [0, 1]
    for b in rep["blocks"]:
        h = b["host"]
        assert h["int8_bit_exact"] and h["inference_params_bit_exact"], h
        assert h["correct_equal"] and h["max_rel_error"] <= 1e-5
    host = rep["host"]
    assert host["scores_bit_exact"] and host["bit_exact"]
    assert host["pipeline_test_accuracy"] == rep["simulator_pipeline_test_accuracy"]


@needs_cc
@pytest.mark.parametrize("update", ["head", "bias"])
def test_update_sets_touch_only_what_they_name(digits_export, tmp_path, update):
    bundle = _bundle(digits_export)
    rep = _run(bundle, tmp_path, blocks=1, steps=2, batch=4, update=update, lr=0.5)
    b = rep["blocks"][0]
    assert b["host"]["int8_bit_exact"] and b["host"]["inference_params_bit_exact"]
    assert rep["host"]["scores_bit_exact"]
    # the simulator's frozen parts stay as exported (its C twin is bit-exact with it)
    before = training_state(bundle.graphs[1])
    block = Int8Block(b_geom := _geom(bundle, 1), *(before[n] for n in
                      ("conv_q", "conv_s", "conv_b", "head_q", "head_s", "head_b")), 0.1, 0)
    x = np.random.default_rng(0).integers(-128, 128, (4, b_geom.in_size, b_geom.in_size,
                                                     b_geom.in_channels)).astype(np.int8)
    qas_step(block, x, np.arange(4), 0.5, 0, update=update)
    np.testing.assert_array_equal(block.conv_q, before["conv_q"])
    np.testing.assert_array_equal(block.conv_s, before["conv_s"])
    if update == "bias":
        np.testing.assert_array_equal(block.head_q, before["head_q"])
        assert not np.array_equal(block.conv_b, before["conv_b"])
    else:
        np.testing.assert_array_equal(block.conv_b, before["conv_b"])
        assert not np.array_equal(block.head_q, before["head_q"])


def _geom(bundle, i):
    from ctxconv.ondevice.loading import geometry

    return geometry(bundle, i)


@needs_cc
def test_feeding_raw_images_equals_feeding_block_inputs(digits_export, tmp_path):
    """ctxconv_train_feed (raw pixels, the frozen blocks run inside) and the harness running
    the frozen blocks itself before ctxconv_train_feed_input learn the same weights."""
    bundle = _bundle(digits_export)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = _run(bundle, tmp_path / "a", blocks=1, steps=2, batch=2, use_feed=True)
    b = _run(bundle, tmp_path / "b", blocks=1, steps=2, batch=2, use_feed=False)
    assert a["feed"] == "ctxconv_train_feed" and b["feed"] == "ctxconv_train_feed_input"
    for r in (a, b):
        assert r["host"]["bit_exact"]
    assert a["blocks"][0]["host"]["losses"] == b["blocks"][0]["host"]["losses"]


def test_the_comparison_catches_a_changed_weight_or_parameter(digits_export):
    """Plant the bugs the check exists for: one int8 weight off by one; a bias rule that
    rounds differently from the device's."""
    bundle = _bundle(digits_export)
    g = bundle.graphs[0]
    st = training_state(g)
    block = Int8Block(_geom(bundle, 0), *(st[n] for n in ("conv_q", "conv_s", "conv_b",
                                                           "head_q", "head_s", "head_b")),
                      0.1, 0)
    got_state = {k: v.copy() for k, v in st.items()}
    params = {k: v.astype(np.int32) for k, v in expected_params(with_state(g, st)).items()}
    got = {"state": got_state, "params": params, "loss": np.zeros(1, np.float32),
           "correct": np.zeros(1)}
    ok = compare_training(got, block, [0.0], [0], with_state(g, st))
    assert ok["int8_bit_exact"] and ok["inference_params_bit_exact"]
    got_state["conv_q"][3, 2] += 1
    assert not compare_training(got, block, [0.0], [0], with_state(g, st))["int8_bit_exact"]
    got_state["conv_q"][3, 2] -= 1
    params["conv_bias"] = np.floor(st["conv_b"] / (0.01 * st["conv_s"])).astype(np.int32)
    bad = compare_training(got, block, [0.0], [0], with_state(g, st))
    assert not bad["inference_params_bit_exact"] and not bad["inference_params_equal"][
        "conv_bias"]


def test_device_bias_rounds_half_away_in_double_and_clamps():
    got = device_bias(np.array([0.5, -0.5, 1.5, 1e30, -1e30], np.float32), 1.0,
                      np.ones(5, np.float32))
    assert got.tolist() == [1, -1, 2, 2**31 - 1, -2**31]


def test_manifest_and_header_say_which_blocks_learn(digits_export, variant_export):
    digits = json.loads((Path(digits_export["export_dir"]) / "manifest.json").read_text())
    assert digits["c"]["training"]["trainable_mask"] == 3
    film = variant_export("film")
    man = json.loads((Path(film["export_dir"]) / "manifest.json").read_text())
    blocks = man["c"]["training"]["blocks"]
    assert blocks[0]["trainable"] and not blocks[1]["trainable"]
    assert "contextual" in blocks[1]["reason"]
    head = (Path(film["export_dir"]) / "c" / "ctxconv_model.h").read_text()
    assert "#define CTXCONV_TRAINABLE_BLOCKS 0x1u" in head
    assert "block 1 (block1): contextual" in " ".join(head.split()).replace(" * ", " ")
    l2 = json.loads((Path(variant_export("l2")["export_dir"]) / "manifest.json").read_text())
    assert all("L2_NORMALIZATION" in b["reason"] for b in l2["c"]["training"]["blocks"])


def test_a_block_the_c_cannot_train_is_refused_with_the_reason(variant_export, tmp_path,
                                                               capsys):
    bundle = _bundle(variant_export("film"))
    with pytest.raises(ValueError, match="block 1 cannot be trained in C: contextual"):
        _run(bundle, tmp_path, blocks=1)
    code = train_cli([str(variant_export("film")["export_dir"]), "--weights", "int8",
                      "--firmware-block", "1"])
    assert code == 2
    assert "block 1 (block1) cannot be trained" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        train_cli([str(variant_export("film")["export_dir"]), "--weights", "int8",
                   "--firmware-block", "one"])
    assert exc.value.code == 2
    assert "'one' is neither 'all' nor a block index" in capsys.readouterr().err


def _compile(c_dir: Path, flags: tuple[str, ...], out: Path, compiler: str = "cc",
             extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return subprocess.run([compiler, *WARNINGS, *extra, *flags, f"-I{c_dir}", "-c",
                           str(c_dir / "ctxconv_train.c"), "-o", str(out)],
                          capture_output=True, text=True)


@needs_cc
def test_training_builds_warning_free_and_refuses_an_untrainable_mask(variant_export,
                                                                     tmp_path):
    c_dir = Path(variant_export("film")["export_dir"]) / "c"
    for mask in ("0", "0x1u"):
        for src in ("ctxconv_train.c", "ctxconv_model.c"):
            proc = subprocess.run(["cc", *WARNINGS, "-ffp-contract=off",
                                   f"-DCTXCONV_TRAIN_BLOCKS={mask}", f"-I{c_dir}", "-c",
                                   str(c_dir / src), "-o", str(tmp_path / "x.o")],
                                  capture_output=True, text=True)
            assert proc.returncode == 0, proc.stderr
    proc = _compile(c_dir, ("-DCTXCONV_TRAIN_BLOCKS=0x2u",), tmp_path / "x.o")
    assert proc.returncode != 0 and "cannot train" in proc.stderr


@needs_arm
def test_training_on_cortex_m_has_no_fused_multiply_add(digits_export, tmp_path):
    """No fused multiply-add (VFMA/VFMS/VFNMA/VFNMS) in the float32 steps; VMLA is
    chained (rounds after the multiply), so it computes what the host computes."""
    c_dir = Path(digits_export["export_dir"]) / "c"
    obj = tmp_path / "t.o"
    proc = _compile(c_dir, ("-DCTXCONV_TRAIN_BLOCKS=0x3u",), obj, "arm-none-eabi-gcc",
                    ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"))
    assert proc.returncode == 0, proc.stderr
    dis = subprocess.run(["arm-none-eabi-objdump", "-d", str(obj)], capture_output=True,
                         text=True, check=True).stdout
    assert "vmul.f32" in dis and not re.search(r"\bvfn?m[as]\.f32", dis)


API_PROGRAM = r"""
#include <stdio.h>
#include "ctxconv_train.h"
int main(void)
{
    static uint8_t px[CTXCONV_INPUT_BYTES];
    ctxconv_train_config cfg = {.block = 0, .update = CTXCONV_UPDATE_ALL, .lr = 0.05f,
                                .batch = 2, .seed = 1, .stochastic = 1};
    printf("%d ", (int)ctxconv_train_feed(px, 0));          /* not configured */
    cfg.block = 1;
    printf("%d ", (int)ctxconv_train_configure(&cfg));      /* block 1 not built */
    cfg.block = 0; cfg.batch = CTXCONV_TRAIN_MAX_BATCH + 1;
    printf("%d ", (int)ctxconv_train_configure(&cfg));      /* batch too large */
    cfg.batch = 2; cfg.lr = -1.0f;
    printf("%d ", (int)ctxconv_train_configure(&cfg));      /* lr <= 0 */
    cfg.lr = 0.05f;
    printf("%d ", (int)ctxconv_train_configure(&cfg));      /* ok */
    printf("%d ", (int)ctxconv_train_feed(px, CTXCONV_NUM_CLASSES)); /* bad label */
    printf("%d ", (int)ctxconv_train_feed(px, 3));          /* kept */
    printf("%d ", (int)ctxconv_train_feed(px, 4));          /* step */
    ctxconv_train_counters c = ctxconv_train_get_counters();
    printf("%u %u %d\n", (unsigned)c.steps, (unsigned)c.samples, c.last_loss > 0.0f);
    return 0;
}
"""


@needs_cc
def test_the_api_returns_its_error_codes(digits_export, tmp_path):
    c_dir = Path(digits_export["export_dir"]) / "c"
    (tmp_path / "main.c").write_text(API_PROGRAM)
    exe = tmp_path / "api"
    subprocess.run(["cc", "-std=c99", "-O1", "-ffp-contract=off", "-DCTXCONV_TRAIN_BLOCKS=1",
                    "-DCTXCONV_TRAIN_MAX_BATCH=4", f"-I{c_dir}", str(tmp_path / "main.c"),
                    *(str(c_dir / f) for f in ("ctxconv_train.c", "ctxconv_model.c",
                                               "ctxconv_kernels.c")),
                    "-o", str(exe), "-lm"], check=True)
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["-4", "-1", "-2", "-2", "0", "-3", "0", "1", "1", "2", "1"]


@needs_arm
def test_every_block_learns_on_the_emulated_cortex_m4(digits_export, tmp_path):
    rep = _run(_bundle(digits_export), tmp_path, blocks="all", steps=2, batch=2,
               from_scratch=True, emulate=True, eval_images=4)
    e = rep["emulated"]
    assert e["bit_exact"] and e["scores_bit_exact"], e
    assert e["target"].startswith("cortex-m4f")
    for b in rep["blocks"]:
        m = b["emulated"]
        assert m["int8_bit_exact"] and m["inference_params_bit_exact"]
        assert m["instructions_per_step"] == pytest.approx(2 * m["instructions_per_sample"],
                                                           abs=2)
    assert rep["blocks"][1]["emulated"]["prefix_instructions_per_image"] > 0
    assert rep["blocks"][0]["emulated"]["prefix_instructions_per_image"] < 5000
    # both blocks' parameters and the step's buffers are RAM, measured on the ELF
    params = sum(b["int8_params"] for b in rep["blocks"])
    assert e["static_ram_bytes"] > params + e["training_buffers_ram_bytes"]


@needs_arm
def test_a_training_build_that_does_not_fit_fails_at_once(digits_export, tmp_path, capsys):
    """Both blocks of the test model learning at batch 8 do not fit an 8 KB part: the link
    fails before any simulation runs, with one line that says what to change, exit 4."""
    import ctxconv.sim

    mcu = Path(ctxconv.sim.__file__).parent / "mcu" / "nrf52840.yaml"
    text = mcu.read_text().replace("sram_bytes: 262144", "sram_bytes: 8192").replace(
        "  sram_bytes: 16384", "  sram_bytes: 1024")
    yaml = tmp_path / "small.yaml"
    yaml.write_text(text.replace("name: nrf52840", "name: small"))
    code = train_cli([str(digits_export["export_dir"]), "--weights", "int8", "--batch", "8",
                      "--mcu", str(yaml), "--firmware-block", "all"])
    err = capsys.readouterr().err
    assert code == 4, err
    assert "region RAM overflowed" in err and "train fewer blocks" in err
    assert len(err.strip().splitlines()) == 1
