"""``ctxconv-sim --backend firmware`` and ``ctxconv-export --format c`` end to end."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from ctxconv.blockgraph.manifest import seal_manifest
from ctxconv.export.cli import main as export_main
from ctxconv.runtimes.firmware.toolchain import missing_arm_tools
from ctxconv.sim.cli import main as sim_main
from ctxconv.sim.firmware_check import firmware_table
from ctxconv.sim.simulate import SimOptions, simulate

ARM_MISSING = missing_arm_tools()
needs_arm = pytest.mark.skipif(ARM_MISSING is not None, reason=str(ARM_MISSING))


@pytest.fixture(scope="module")
def export_dir(digits_export, tmp_path_factory) -> Path:
    """A private copy of the digits export (tests here rewrite its C folder)."""
    copy = tmp_path_factory.mktemp("fw") / "export"
    shutil.copytree(digits_export["export_dir"], copy)
    return copy


def test_export_writes_the_c_library_with_its_digests(export_dir):
    manifest = json.loads((export_dir / "manifest.json").read_text())
    c = manifest["c"]
    assert c["dir"] == "c" and c["arena_bytes"] > 0
    assert {r["buffer"] for r in c["arena"]} >= {"input", "b0.features", "b1.scores"}
    for name in ("ctxconv_model.c", "ctxconv_model.h", "ctxconv_kernels.c", "README.md"):
        assert f"c/{name}" in manifest["files"]
    # offsets + sizes never run past the arena
    assert max(r["offset"] + r["bytes"] for r in c["arena"]) <= c["arena_bytes"]


def test_c_regenerated_from_an_export_directory(export_dir, capsys):
    before = (export_dir / "c" / "ctxconv_model.c").read_text()
    shutil.rmtree(export_dir / "c")
    assert export_main([str(export_dir), "--format", "c"]) == 0
    assert "wrote the C library" in capsys.readouterr().out
    assert (export_dir / "c" / "ctxconv_model.c").read_text() == before
    assert export_main([str(export_dir), "--format", "onnx"]) == 2
    assert "only its C library can be generated from it" in capsys.readouterr().err


def test_c_from_a_damaged_export_is_refused(export_dir, tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(export_dir, bad)
    data = bytearray((bad / "block1.tflite").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bad / "block1.tflite").write_bytes(bytes(data))
    assert export_main([str(bad), "--format", "c"]) == 2
    assert re.search(r"block1.tflite is missing or does not match its sha256",
                     capsys.readouterr().err)


def test_float_export_cannot_write_c(digits_run, capsys):
    assert export_main([str(digits_run), "--format", "c", "--out",
                        str(digits_run / "float-c")]) == 2
    assert "export with --int8 to write it" in capsys.readouterr().err


@needs_arm
def test_library_uses_no_floating_point(export_dir, tmp_path):
    """Compiled for a soft-float Cortex-M4, the library calls no float helper."""
    for src in ("ctxconv_model.c", "ctxconv_kernels.c"):
        obj = tmp_path / (src + ".o")
        subprocess.run(["arm-none-eabi-gcc", "-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=soft",
                        "-std=c99", "-O2", "-c", str(export_dir / "c" / src), "-o", str(obj)],
                       check=True)
        undefined = subprocess.run(["arm-none-eabi-nm", "-u", str(obj)], check=True,
                                   capture_output=True, text=True).stdout
        assert not re.search(r"__aeabi_[fd]|__aeabi_[ui]?[lf]2[fd]", undefined), undefined
        assert "malloc" not in undefined


@needs_arm
def test_firmware_backend_report(export_dir, digits_export):
    report = simulate(export_dir, SimOptions(mcu="nrf52840", backend="firmware", images=120,
                                             emulated_images=4))
    fw = report["firmware"]
    assert fw["host"]["bit_exact"] and fw["host"]["images"] == 120
    emu = fw["emulated"]
    assert emu["bit_exact"] and emu["bit_exact_vs_host"] and emu["images"] == 4
    assert emu["bit_exact_vs_tflm"]
    assert emu["target"] == "cortex-m4f (mps2-an386)"
    assert 0 < emu["static_ram_bytes"] <= report["sram_limit_bytes"]
    assert 0 < emu["stack_high_water_bytes"] < 8192
    # the library's flash holds every int8 weight of the .tflite files
    weights = sum(b["params"] for b in digits_export["blocks"])
    assert emu["library_flash_bytes"] >= weights
    for b, d in zip(emu["blocks"], digits_export["blocks"], strict=True):
        assert b["macs"] == d["macs"] and b["instructions"] > b["macs"] * 0.5
    assert emu["instructions_per_image"]["onepass"] >= sum(b["instructions"]
                                                           for b in emu["blocks"])
    assert 0 < emu["ram_over_tflm_largest_block"] < 5
    assert report["accuracy"] == fw["host"]["modes"]["onepass"]["accuracy"]
    # beside the measured instructions, the cycle estimate, labelled as one
    est = emu["cycle_estimate"]
    assert est["label"].startswith("estimate:") and est["timing"] == "cortex-m4f"
    assert 1.0 <= est["cycles_per_instruction"] < 3.0 and est["traced_instructions"] > 0
    for m, v in emu["instructions_per_image"].items():
        assert est["per_image"][m] == round(v * est["cycles_per_instruction"])
        assert est["ms_per_image"][m] == round(1e3 * est["per_image"][m] / 64e6, 2)
    assert all(b["cycles_estimate"] > b["instructions"] for b in emu["blocks"])
    text = firmware_table(fw)
    assert "instructions per image (measured):" in text and "cycles per image (estimate:" in text


@needs_arm
def test_cores_without_an_emulator_stay_modelled(export_dir):
    report = simulate(export_dir, SimOptions(mcu="esp32s3", backend="firmware", images=20,
                                             measure_tflm=False))
    fw = report["firmware"]
    assert fw["host"]["bit_exact"] and fw["emulated"] is None
    assert "xtensa-lx7 core has no emulated firmware target" in fw["emulated_unavailable"]


@needs_arm
def test_linker_refuses_a_model_that_does_not_fit(export_dir, tmp_path, capsys):
    profile = yaml.safe_load((Path(__file__).parents[2] / "ctxconv/sim/mcu/nrf52840.yaml")
                             .read_text())
    profile.update(name="tiny", sram_bytes=6144)
    profile["reserved"]["sram_bytes"] = 1024
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(profile))
    code = sim_main([str(export_dir), "--mcu", str(path), "--backend", "firmware", "--images",
                     "8", "--no-tflm-arena", "--plot", str(tmp_path / "m.png")])
    err = capsys.readouterr().err
    assert code == 4, err
    assert re.search(r"the linker refused the image: region RAM overflowed by \d+ bytes", err)
    assert "C library arena" in err and "b0.features" in err


def test_firmware_backend_without_c_sources_says_how(export_dir, tmp_path, capsys):
    bare = tmp_path / "bare"
    shutil.copytree(export_dir, bare, ignore=shutil.ignore_patterns("c"))
    manifest = json.loads((bare / "manifest.json").read_text())
    manifest["files"] = {k: v for k, v in manifest["files"].items() if not k.startswith("c/")}
    (bare / "manifest.json").write_text(json.dumps(seal_manifest(manifest)))
    assert sim_main([str(bare), "--backend", "firmware", "--no-tflm-arena", "--images", "4"]) == 2
    assert f"generate it with `ctxconv-export {bare} --format c`" in capsys.readouterr().err


@needs_arm
def test_bench_firmware_column(export_dir, capsys):
    from ctxconv.sim.bench_cli import main as bench_main

    code = bench_main([str(export_dir), "--mcu", "nrf52840,rp2040,esp32s3", "--firmware",
                       "--images", "20", "--emulated-images", "2", "--bit-exact-images", "0"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "Generated C, measured on the binary" in out
    row = next(line for line in out.splitlines() if line.startswith("| nrf52840 |")
               and "mps2-an386" in line)
    assert row.rstrip().endswith("| yes / yes |")
    m0 = next(line for line in out.splitlines() if line.startswith("| rp2040 |")
              and "mps2-an385" in line)
    assert m0.rstrip().endswith("| yes / yes |")
    assert re.search(r"\| esp32s3 \| .* \| modelled only \(xtensa-lx7\) \|", out)


@needs_arm
def test_firmware_checks_in_worker_processes_equal_one_process(export_dir):
    """Host-build chunks and emulated images shared by worker processes give the report of
    one process: the same comparisons, instructions, stack and RAM."""
    from ctxconv.blockgraph.bundle import load_export
    from ctxconv.sim.firmware_check import run_firmware
    from ctxconv.sim.fit import plan_on
    from ctxconv.sim.profiles import load_profile

    bundle = load_export(export_dir)
    profile = load_profile("nrf52840")
    plan = plan_on(profile, bundle.graphs, bundle.num_classes, bundle.tflite)
    raw, labels = bundle.test_vectors(90)

    def report(workers: int) -> dict:
        fw = run_firmware(bundle, profile, plan, raw, labels, emulated_images=5,
                          workers=workers)
        fw.pop("c_dir")
        return fw

    one, three = report(1), report(3)
    assert three["emulated"]["images"] == 5 and three["host"]["images"] == 90
    assert three["host"] == one["host"]
    emu1, emu3 = one["emulated"], three["emulated"]
    # each run calibrates its own counter: instructions agree to the counter's granularity
    for a, b in zip(emu1.pop("blocks"), emu3.pop("blocks"), strict=True):
        for key in ("instructions", "instructions_per_mac", "instructions_over_modelled_cycles",
                    "cycles_estimate"):
            assert a.pop(key) == pytest.approx(b.pop(key), rel=1e-3)
        assert a == b
    for key in ("instructions_per_image", "instructions_per_mac"):
        for m, v in emu1.pop(key).items():
            assert emu3[key][m] == pytest.approx(v, rel=1e-3)
        emu3.pop(key)
    # the traced image is the same run either way; its cycles follow the instructions
    est1, est3 = emu1.pop("cycle_estimate"), emu3.pop("cycle_estimate")
    for key in ("per_image", "ms_per_image"):
        got = est3.pop(key)
        for m, v in est1.pop(key).items():
            assert got[m] == pytest.approx(v, rel=1e-3)
    assert est3 == est1
    assert emu3 == emu1


def test_concatenated_runs_keep_image_order_and_refuse_mixed_builds():
    import numpy as np

    from ctxconv.runtimes.firmware.run import HarnessOutputs, concat_outputs
    from ctxconv.runtimes.firmware.targets import FirmwareError

    def run(first: int, n: int, cal: int = 7, stack: int = 100) -> HarnessOutputs:
        ids = np.arange(first, first + n)
        return HarnessOutputs([ids[:, None, None]], [ids[:, None, None]], [ids],
                              {"onepass": ids[:, None]}, {"onepass": ids}, cal, stack + first)

    both = concat_outputs([run(0, 3), run(3, 2)])
    assert both.scores["onepass"][:, 0].tolist() == [0, 1, 2, 3, 4]
    assert both.features[0][:, 0, 0].tolist() == [0, 1, 2, 3, 4]
    assert both.stack_used == 103 and both.calibration_ticks == 7
    # a run whose calibration loop took 14 ticks counts at half the rate
    mixed = concat_outputs([run(0, 3), run(3, 2, cal=14)])
    assert mixed.block_ticks[0].tolist() == [0, 1, 2, 1.5, 2]
    with pytest.raises(FirmwareError, match="disagree on the instruction counter"):
        concat_outputs([run(0, 3), run(3, 2, cal=0)])


@needs_arm
def test_host_check_runs_tflm_beside_the_reference_on_its_chunks(export_dir, tmp_path):
    """The host build's chunks that start before ``tflm_images`` give TFLM every block call
    of the reference kernels: a changed reference bias shows as a difference in its block."""
    import numpy as np

    from ctxconv.blockgraph.bundle import load_export
    from ctxconv.sim.firmware_check import check_host

    bundle = load_export(export_dir)
    raw, labels = bundle.test_vectors(60)
    report, _ = check_host(bundle, export_dir / "c", raw, labels, tmp_path, chunk=25,
                           workers=2, tflm_images=30)
    # shards [0, 30) and [30, 60); the first one's chunks [0, 25) and [25, 30) start before 30
    assert report["tflm"] == {"images": 30, "max_lsb": [0, 0]}
    none, _ = check_host(bundle, export_dir / "c", raw, labels, tmp_path, chunk=25)
    assert none["tflm"] == {"images": 0, "max_lsb": []}
    bias = next(t for t in bundle.graphs[1].tensors.values() if t.data is not None
                and t.data.dtype == np.int32)
    bias.data = bias.data + 1000
    bad, _ = check_host(bundle, export_dir / "c", raw, labels, tmp_path, chunk=25,
                        tflm_images=10)
    assert bad["tflm"]["images"] == 25 and bad["tflm"]["max_lsb"][0] == 0
    assert bad["tflm"]["max_lsb"][1] > 0 and not bad["bit_exact"]


@needs_arm
def test_firmware_report_names_the_images_tflm_checked(export_dir):
    report = simulate(export_dir, SimOptions(backend="firmware", images=120, emulated_images=2,
                                             measure_tflm=False))
    assert report["bit_exact_images"] == 120 and report["bit_exact_vs_tflm"] is True
    assert report["max_lsb_vs_tflm"] == [0, 0]


@needs_arm
def test_host_check_runs_the_other_coinciding_mode_on_the_first_chunk_only(export_dir, tmp_path):
    """Where the export's modes are one computation, every vector runs the simulated mode and
    every block; the other mode runs on the first chunk; a wrong score still shows."""
    from ctxconv.blockgraph.bundle import load_export
    from ctxconv.blockgraph.pipeline import modes_coincide
    from ctxconv.sim.firmware_check import check_host, host_modes

    bundle = load_export(export_dir)
    assert modes_coincide(bundle.manifest) and len(bundle.manifest["modes"]) == 2
    other = next(m for m in bundle.manifest["modes"] if m != "onepass")
    assert host_modes(bundle, "onepass") == ["onepass"]
    assert host_modes(bundle, None) == list(bundle.manifest["modes"])
    raw, labels = bundle.test_vectors(60)
    report, first = check_host(bundle, export_dir / "c", raw, labels, tmp_path, chunk=25,
                               workers=2, mode="onepass")
    assert report["bit_exact"] and report["modes"]["onepass"]["images"] == 60
    assert report["modes"][other]["images"] == 25 and set(first.scores) == {other, "onepass"}
    for mode, wrong in (("onepass", 60), (other, 25)):  # a planted bug in one entry point
        c_dir = tmp_path / f"c_{mode}"
        shutil.copytree(export_dir / "c", c_dir)
        src = c_dir / "ctxconv_model.c"
        head = (f"void ctxconv_classify_{mode}(const int8_t *input, "
                "int32_t scores[CTXCONV_NUM_CLASSES])\n{\n")
        body = src.read_text().split(head, 1)
        end = body[1].index("\n}\n")
        src.write_text(body[0] + head + body[1][:end] + "\n    scores[0] += 1;"
                       + body[1][end:])
        (tmp_path / mode).mkdir()
        bad, _ = check_host(bundle, c_dir, raw, labels, tmp_path / mode, chunk=25, workers=2,
                            mode="onepass")
        assert not bad["bit_exact"], mode
        assert bad["modes"][mode]["scores_equal"] == 0.0
        assert bad["modes"][mode]["images"] == wrong
