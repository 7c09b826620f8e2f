"""The TFLM side-by-side anchor's parts that need no tflite-micro checkout: the harness's
output file read back, the ratios and the bit-exactness verdict, the memory sums, the
Makefile's flags taken apart, and the one-line error for a missing or incomplete checkout."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from benchmarks import tflm_mcu_bench as bench
from benchmarks.provenance import ROOT
from benchmarks.tflm_mcu import build as tb
from ctxconv.runtimes.firmware.run import CALIBRATION_INSTRUCTIONS

NAMES = [["features", "scores"], ["features", "scores"]]
SIZES = [[12, 3], [6, 3]]
CAL = 50_000  # ticks of the calibration loop: 40 instructions per tick


def harness_file(n: int, rng: np.random.Generator, sizes=SIZES) -> tuple[bytes, np.ndarray]:
    """A TFLM harness output file for ``n`` images, as tflm_harness.cc writes it."""
    rec = np.zeros(n, bench.tflm_dtype(sizes))
    for b, s in enumerate(sizes):
        rec[f"pb_out{b}"] = rng.integers(-128, 128, (n, sum(s)))
        rec[f"sh_out{b}"] = rec[f"pb_out{b}"]
        rec[f"pb_invoke{b}"] = 1000 * (b + 1) + np.arange(n)
        rec[f"sh_setup{b}"] = 77 + b
        rec[f"sh_invoke{b}"] = rec[f"pb_invoke{b}"]
    rec["pb_image"] = 5000 + np.arange(n)
    rec["sh_image"] = 6000 + np.arange(n)
    words = []
    for b, s in enumerate(sizes):
        words += [400 + b, 401 + b, 416 + b, 390 + b, len(s), *s, *[0] * (4 - len(s))]
    words += [512, 64]
    trailer = np.array([CAL, 0, 1234], "<u4").tobytes()
    return rec.tobytes() + np.array(words, "<u4").tobytes() + trailer, rec


def test_the_harness_file_is_read_back_field_by_field():
    data, rec = harness_file(3, np.random.default_rng(0))
    got = bench.decode_tflm(data, 3, NAMES, SIZES)
    np.testing.assert_array_equal(got["per_block"][1]["features"], rec["pb_out1"][:, :6])
    np.testing.assert_array_equal(got["per_block"][1]["scores"], rec["pb_out1"][:, 6:])
    np.testing.assert_array_equal(got["per_block"][0]["scores"], rec["pb_out0"][:, 12:])
    np.testing.assert_array_equal(got["invoke_ticks"][:, 1], [2000, 2001, 2002])
    np.testing.assert_array_equal(got["image_ticks"], [5000, 5001, 5002])
    np.testing.assert_array_equal(got["shared_image_ticks"], [6000, 6001, 6002])
    np.testing.assert_array_equal(got["shared_setup_ticks"][:, 0], [77] * 3)
    assert got["probe_bytes"] == [400, 401] and got["arena_used_bytes"] == [401, 402]
    assert got["arena_bytes"] == [416, 417] and got["shared_used_bytes"] == [390, 391]
    assert (got["shared_arena_bytes"], got["handoff_bytes"]) == (512, 64)
    assert (got["calibration_ticks"], got["stack_used"]) == (CAL, 1234)


def test_a_short_file_or_other_output_sizes_are_refused():
    data, _ = harness_file(2, np.random.default_rng(1))
    with pytest.raises(ValueError, match="expected"):
        bench.decode_tflm(data[:-1], 2, NAMES, SIZES)
    with pytest.raises(ValueError, match="block 1"):
        bench.decode_tflm(data, 2, NAMES, [[12, 3], [7, 2]])


def records(rng: np.random.Generator, n: int = 4):
    """A ctxconv record and a TFLM record of the same outputs, and the images' facts."""
    data, _ = harness_file(n, rng)
    tflm = bench.decode_tflm(data, n, NAMES, SIZES)
    ctx = {"outputs": [{k: v.copy() for k, v in blk.items()} for blk in tflm["per_block"]],
           "block_ticks": [np.full(n, 500), np.full(n, 4000)], "image_ticks": np.full(n, 4600),
           "calibration_ticks": CAL // 2, "mode": "onepass", "stack_used": 900,
           "static_ram_bytes": 3000, "io_bytes": 100, "ram_bytes": 4000,
           "elf_data_bss_bytes": 3100, "flash_bytes": 10_000, "tflite_bytes": 8000}
    image = {"flash_bytes": 25_000, "static_ram_bytes": 50_000, "pool_bytes": 40_000,
             "handoff_bytes": 64}
    return ctx, tflm, image


def test_ratios_and_sums_come_from_the_records():
    ctx, tflm, image = records(np.random.default_rng(2))
    res = bench.summarize(ctx, tflm, image, ["b0", "b1"])
    per_tick_c = CALIBRATION_INSTRUCTIONS / (CAL // 2)  # 80 instructions per tick
    per_tick_t = CALIBRATION_INSTRUCTIONS / CAL  # 40
    b0 = res["blocks"][0]
    assert b0["ctxconv_instructions"] == 500 * per_tick_c
    assert b0["tflm_instructions"] == round(float(np.median(1000 + np.arange(4))) * per_tick_t)
    assert b0["tflm_over_ctxconv"] == round(b0["tflm_instructions"] / (500 * per_tick_c), 3)
    img = res["image"]
    assert img["ctxconv_instructions"] == 4600 * per_tick_c
    assert img["tflm_instructions"] == round(5001.5 * per_tick_t)
    assert img["tflm_over_ctxconv"] == round(img["tflm_instructions"] / (4600 * per_tick_c), 3)
    ram = res["ram"]["tflm"]
    assert ram["static_other_bytes"] == 50_000 - 40_000 - 64
    assert ram["shared_ram_bytes"] == 391 + 64 + ram["static_other_bytes"] + 1234
    assert ram["per_block_ram_bytes"] == 401 + 402 + ram["static_other_bytes"] + 1234
    assert res["ram"]["tflm_shared_over_ctxconv"] == round(ram["shared_ram_bytes"] / 4000, 3)
    assert res["flash"]["tflm_over_ctxconv"] == 2.5
    assert res["bit_exact"]["all"] and res["bit_exact"]["tflm_modes_agree"]


def test_one_byte_off_in_one_block_output_is_not_bit_exact():
    ctx, tflm, image = records(np.random.default_rng(3))
    ctx["outputs"][1]["scores"][2, 1] ^= 1
    res = bench.summarize(ctx, tflm, image, ["b0", "b1"])
    exact = res["bit_exact"]["per_block_arenas"]
    assert exact[0]["features"]["bit_exact"] and exact[1]["features"]["bit_exact"]
    assert exact[1]["scores"] == {"vectors": 4, "equal": 3, "max_diff": 1, "bit_exact": False}
    assert not res["bit_exact"]["all"]
    assert "scores **no** (3/4)" in "\n".join(bench.render(rendered(res)))


def test_the_shared_arena_layout_is_checked_too():
    ctx, tflm, image = records(np.random.default_rng(4))
    tflm["shared"][0]["features"] = tflm["shared"][0]["features"].copy()
    tflm["shared"][0]["features"][0, 0] ^= 4
    res = bench.summarize(ctx, tflm, image, ["b0", "b1"])
    assert bench.all_exact(res["bit_exact"]["per_block_arenas"])
    assert not res["bit_exact"]["all"] and not res["bit_exact"]["tflm_modes_agree"]


def rendered(res: dict) -> dict:
    res.update({"export": "x/export", "images": 4, "target": "cortex-m4f (mps2-an386)"})
    return {"provenance": None, "wall_seconds": 1.0, "tflm_library_seconds": 0.5,
            "tflm": {"tflite_micro": "abc", "pins": {}}, "exports": {"x": res}}


def test_make_variables_are_split_and_includes_made_absolute(tmp_path):
    text = ("noise\nCXXFLAGS=-O2 -DX=\\\"ARMCM4.h\\\" -MD\nINCLUDES=-I. -Ia/b -I/abs\n"
            "CXXFLAGS=later\n")
    got = tb.parse_make_vars(text, ("CXXFLAGS", "INCLUDES"))
    assert got["CXXFLAGS"] == ["-O2", '-DX="ARMCM4.h"', "-MD"]
    assert tb.absolute_includes(got["INCLUDES"], tmp_path) == [
        f"-I{tmp_path / '.'}", f"-I{tmp_path / 'a/b'}", "-I/abs"]
    with pytest.raises(tb.TflmError, match="INCLUDES"):
        tb.parse_make_vars("CXXFLAGS=-O2\n", ("CXXFLAGS", "INCLUDES"))


def test_an_incomplete_checkout_names_what_it_lacks(tmp_path):
    with pytest.raises(tb.TflmError, match="not a tflite-micro checkout"):
        tb.check_checkout(tmp_path)
    (tmp_path / tb.MAKEFILE).parent.mkdir(parents=True)
    (tmp_path / tb.MAKEFILE).write_text("")
    for d in ("cmsis", "cmsis_nn", "flatbuffers", "gemmlowp", "ruy", "kissfft"):
        (tmp_path / tb.DOWNLOADS / d).mkdir(parents=True)
    with pytest.raises(tb.TflmError, match=r"lacks cmsis/Cortex_DFP, pigweed \("):
        tb.check_checkout(tmp_path)
    (tmp_path / tb.DOWNLOADS / "cmsis/Cortex_DFP").mkdir()
    (tmp_path / tb.DOWNLOADS / "pigweed").mkdir()
    assert tb.check_checkout(tmp_path) == tmp_path.resolve()


@pytest.mark.parametrize("args", [["--tflm", "no/such/tflite-micro"], []])
def test_a_missing_checkout_is_one_line_and_exit_2(args, tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks/tflm_mcu_bench.py"), *args],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert ("not a tflite-micro checkout" if args else "--tflm PATH") in lines[0]
    assert not (tmp_path / "benchmarks").exists()


def test_the_stored_command_names_the_checkout_not_its_path():
    cmd = "python benchmarks/tflm_mcu_bench.py --tflm /x/y/tflm --build-dir=/b x/export"
    assert bench.public_command(cmd, {"/x/y/tflm": "TFLM_CHECKOUT", "/b": "BUILD_DIR"}) == (
        "python benchmarks/tflm_mcu_bench.py --tflm TFLM_CHECKOUT --build-dir=BUILD_DIR "
        "x/export")
    assert bench.public_command(cmd, {None: "BUILD_DIR"}) == cmd
