"""The generated C of FiLM (MUL), energy goodness (MUL, MEAN) and L2-normalised (L2_NORMALIZATION)
exports: a default export writes it, and ``ctxconv-sim --backend firmware`` finds it bit-exact
with the reference kernels on every test vector (host build) and on the emulated Cortex-M4."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ctxconv.blockgraph.bundle import load_export
from ctxconv.runtimes.firmware.toolchain import missing_arm_tools
from ctxconv.sim.cli import main as sim_main
from ctxconv.sim.firmware_check import check_host

needs_cc = pytest.mark.skipif(shutil.which("cc") is None,
                              reason="no C compiler: apt-get install -y gcc")
ARM_MISSING = missing_arm_tools()
needs_arm = pytest.mark.skipif(ARM_MISSING is not None, reason=str(ARM_MISSING))

#: variant -> the C kernels its blocks call
KERNELS = {"film": {"ctxconv_mul_s8"}, "energy": {"ctxconv_mul_s8", "ctxconv_mean_s8"},
           "l2": {"ctxconv_l2norm_s8"}}


@pytest.mark.parametrize("name", list(KERNELS))
def test_default_export_writes_the_c_library(name, variant_export):
    manifest = variant_export(name)
    out = Path(manifest["export_dir"])
    assert manifest["c"]["dir"] == "c" and "c/ctxconv_model.c" in manifest["files"]
    source = (out / "c" / "ctxconv_model.c").read_text()
    assert all(f"{k}(&" in source for k in KERNELS[name]), name


@needs_cc
@pytest.mark.parametrize("name", list(KERNELS))
def test_host_build_bit_exact_on_every_test_vector(name, variant_export, tmp_path):
    bundle = load_export(variant_export(name)["export_dir"])
    raw, labels = bundle.test_vectors()
    report, _ = check_host(bundle, bundle.path / "c", raw, labels, tmp_path)
    assert report["bit_exact"] and report["images"] == len(raw) > 300, report
    assert all(b == {"features_equal": 1.0, "scores_equal": 1.0} for b in report["blocks"])


@needs_arm
@pytest.mark.parametrize("name", list(KERNELS))
def test_firmware_backend_bit_exact_on_every_test_vector(name, variant_export, tmp_path, capsys):
    manifest = variant_export(name)
    out = tmp_path / "report.json"
    code = sim_main([manifest["export_dir"], "--mcu", "nrf52840", "--backend", "firmware",
                     "--emulated-images", "3", "--no-tflm-arena", "--json", str(out),
                     "--plot", str(tmp_path / "m.png")])
    assert code == 0, capsys.readouterr().err
    rep = json.loads(out.read_text())
    host, emu = rep["firmware"]["host"], rep["firmware"]["emulated"]
    assert host["bit_exact"] and host["images"] == rep["test_vectors"], host
    assert all(b == {"features_equal": 1.0, "scores_equal": 1.0} for b in host["blocks"])
    assert emu["target"] == "cortex-m4f (mps2-an386)" and emu["images"] == 3
    assert emu["bit_exact"] and emu["bit_exact_vs_tflm"] and emu["bit_exact_vs_host"], emu
    assert rep["accuracy"] == host["modes"]["multipass"]["accuracy"]
