"""What the commands promise: signed manifests, truthful exit codes, one-line errors."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from ctxconv.sim.cli import main as sim_main

needs_cc = pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")


@pytest.fixture(scope="module")
def export_dir(digits_export) -> Path:
    return Path(digits_export["export_dir"])


def _edited(export_dir: Path, tmp_path: Path, edit) -> Path:
    work = tmp_path / "export"
    shutil.copytree(export_dir, work)
    manifest = json.loads((work / "manifest.json").read_text())
    edit(manifest)
    (work / "manifest.json").write_text(json.dumps(manifest))
    return work


@pytest.mark.parametrize(("field", "edit"), [
    ("input.mean", lambda m: m["input"].update(mean=[0.9])),
    ("dataset.num_classes", lambda m: m["dataset"].update(num_classes=5)),
    ("input.pixel_scale", lambda m: m["input"].update(pixel_scale=0.5)),
    ("blocks[0]", lambda m: m["blocks"][0]["outputs"][0].update(zero_point=3)),
    ("quantization.calibration", lambda m: m["quantization"]["calibration"].update(samples=1)),
])  # fmt: skip
def test_edited_manifest_field_is_named(export_dir, tmp_path, capsys, field, edit):
    work = _edited(export_dir, tmp_path, edit)
    t0 = time.perf_counter()
    code = sim_main([str(work), "--mcu", "nrf52840", "--plot", str(tmp_path / "m.png")])
    seconds = time.perf_counter() - t0
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == [f"error: {work / 'manifest.json'}: field {field!r} was changed after export "
                   "(it does not match the manifest's digests); re-export"]
    assert seconds < 1.0
    assert not (tmp_path / "m.png").exists()


def test_nan_in_manifest_is_refused(export_dir, tmp_path, capsys):
    work = _edited(export_dir, tmp_path, lambda m: m["input"].update(std=[float("nan")]))
    assert sim_main([str(work), "--no-tflm-arena"]) == 2
    err = capsys.readouterr().err
    assert "field 'input.std[0]' is NaN or infinite" in err and err.count("\n") == 1


def test_old_export_without_digests_says_re_export(export_dir, tmp_path, capsys):
    def old(m: dict) -> None:
        m["format"] = "ctxconv-export-v1"
        del m["digests"]

    work = _edited(export_dir, tmp_path, old)
    assert sim_main([str(work), "--no-tflm-arena"]) == 2
    err = capsys.readouterr().err
    assert "format 'ctxconv-export-v1' was written by an older ctxconv-export" in err
    assert err.strip().endswith("re-export")


def test_missing_digests_say_re_export(export_dir, tmp_path, capsys):
    work = _edited(export_dir, tmp_path, lambda m: m.pop("digests"))
    assert sim_main([str(work), "--no-tflm-arena"]) == 2
    assert "no 'digests' field" in capsys.readouterr().err


# ----------------------------------------------------------------- exit codes tell the truth


def test_sim_exits_3_when_reference_kernels_differ_from_tflm(export_dir, tmp_path, capsys,
                                                            monkeypatch):
    import ctxconv.sim.simulate as sim
    from ctxconv.sim.reference_pass import PassResult

    def differ(bundle, raw, mode, check, workers):
        return PassResult(np.zeros(len(raw), np.int64), [0, 2], check)

    monkeypatch.setattr(sim, "reference_pass", differ)
    code = sim_main([str(export_dir), "--no-tflm-arena", "--images", "20",
                     "--plot", str(tmp_path / "m.png")])
    out, err = capsys.readouterr()
    assert code == 3
    assert "error: check failed: the reference kernels are not bit-exact with TFLM (max LSB " \
           "per block [0, 2])" in err
    assert "verdict: CHECK FAILED" in out and "verdict: FITS" not in out


def _c_not_bit_exact(monkeypatch) -> None:
    """The generated C's outputs compared as if one image differed."""
    import ctxconv.sim.firmware_check as fw

    real = fw.compare

    def compare(got, ref, labels):
        result = real(got, ref, labels)
        result["bit_exact"] = False
        return result

    monkeypatch.setattr(fw, "compare", compare)


@needs_cc
def test_sim_firmware_exits_3_when_c_not_bit_exact(export_dir, tmp_path, capsys, monkeypatch):
    _c_not_bit_exact(monkeypatch)
    code = sim_main([str(export_dir), "--mcu", "esp32s3", "--backend", "firmware", "--images",
                     "20", "--no-tflm-arena", "--bit-exact-images", "0"])
    out, err = capsys.readouterr()
    assert code == 3, err
    assert err.strip().splitlines()[-1] == (
        "error: check failed: the generated C (host build) is not bit-exact with the reference "
        "kernels on 20 test vectors")
    assert "verdict: CHECK FAILED" in out


@needs_cc
def test_bench_firmware_exits_3_when_c_not_bit_exact(export_dir, tmp_path, capsys,
                                                     monkeypatch):
    from ctxconv.sim.bench_cli import main as bench_main

    _c_not_bit_exact(monkeypatch)
    code = bench_main([str(export_dir), "--mcu", "esp32s3", "--firmware", "--images", "20",
                       "--bit-exact-images", "0"])
    err = capsys.readouterr().err
    assert code == 3, err
    assert "error: check failed: esp32s3 (onepass): the generated C (host build) is not " \
           "bit-exact" in err


def test_bench_checks_every_mcu_name_first(export_dir, capsys, monkeypatch):
    import ctxconv.sim.bench_cli as bench

    monkeypatch.setattr(bench, "simulate", lambda *a, **k: pytest.fail("work started"))
    t0 = time.perf_counter()
    code = bench.main([str(export_dir), "--mcu", "nrf52840,stm32f74"])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.startswith("error: unknown MCU profile 'stm32f74'; did you mean 'stm32f746'?")
    assert err.count("\n") == 1
    assert time.perf_counter() - t0 < 1.0


@pytest.mark.parametrize("argv", [["--images", "0"], ["--emulated-images", "0"],
                                  ["--mcu", "nrf52840,"], ["--bit-exact-images", "-1"]])
def test_bench_checks_arguments_first(export_dir, capsys, monkeypatch, argv):
    import ctxconv.sim.bench_cli as bench

    monkeypatch.setattr(bench, "simulate", lambda *a, **k: pytest.fail("work started"))
    assert bench.main([str(export_dir), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_sim_refuses_a_float_export(export_dir, tmp_path, capsys):
    from ctxconv.blockgraph.manifest import seal_manifest

    work = _edited(export_dir, tmp_path, lambda m: seal_manifest(m.update(int8=False) or m))
    code = sim_main([str(work), "--no-tflm-arena"])
    err = capsys.readouterr().err
    assert code == 2
    assert err == (f"error: {work} is a float export: the simulator models int8 deployments "
                   "only; export with ctxconv-export RUN_DIR --int8\n")


# ----------------------------------------------------- no tracebacks for ordinary errors


def _no_work(monkeypatch) -> None:
    import ctxconv.sim.bench_cli as bench
    import ctxconv.sim.cli as cli

    for module in (cli, bench):
        monkeypatch.setattr(module, "simulate", lambda *a, **k: pytest.fail("work started"))


@pytest.mark.parametrize("option", ["--json", "--plot"])
@pytest.mark.parametrize("kind", ["directory", "missing parent", "unwritable"])
def test_sim_checks_output_paths_first(export_dir, tmp_path, capsys, monkeypatch, option,
                                       kind):
    _no_work(monkeypatch)
    path = {"directory": str(tmp_path), "missing parent": str(tmp_path / "no" / "r.out"),
            "unwritable": "/proc/ctxconv-report.out"}[kind]
    code = sim_main([str(export_dir), option, path])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(f"error: {option} {path}: ") and err.count("\n") == 1


@pytest.mark.parametrize("option", ["--json", "--out"])
def test_bench_checks_output_paths_first(export_dir, tmp_path, capsys, monkeypatch, option):
    _no_work(monkeypatch)
    from ctxconv.sim.bench_cli import main as bench_main

    assert bench_main([str(export_dir), "--mcu", "nrf52840", option, str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"error: {option} {tmp_path}: is a directory; give a " \
                                      "file name\n"


def test_sim_train_checks_its_json_path(export_dir, tmp_path, capsys):
    from ctxconv.ondevice.cli import main as train_main

    path = tmp_path / "no" / "r.json"
    assert train_main([str(export_dir), "--json", str(path)]) == 2
    assert capsys.readouterr().err == f"error: --json {path}: folder {path.parent} does not " \
                                      "exist\n"


def test_missing_mcu_dir_is_one_line(export_dir, tmp_path, capsys, monkeypatch):
    from ctxconv.sim.cli import build_parser

    missing = tmp_path / "profiles"
    monkeypatch.setenv("CTXCONV_MCU_DIR", str(missing))
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["--help"])
    assert exit_.value.code == 0
    assert sim_main([str(export_dir), "--no-tflm-arena"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: CTXCONV_MCU_DIR={str(missing)!r} is not a directory")
    assert err.count("\n") == 1


@pytest.mark.parametrize(("content", "message"), [
    (b"name: bad\n# \xff\xfe\n", "not UTF-8 text"),
    (b"clock_hz: .nan\n", "field 'clock_hz' must be a finite number, got nan"),
])  # fmt: skip
def test_bad_mcu_yaml_names_file_and_field(export_dir, tmp_path, capsys, monkeypatch, content,
                                           message):
    import yaml

    from ctxconv.sim.profiles import _packaged

    good = _packaged()["nrf52840"][1].read_text(encoding="utf-8")
    if content.startswith(b"clock_hz"):
        data = yaml.safe_load(good)
        data.pop("clock_hz")
        content = yaml.safe_dump(data).encode() + content
    else:
        content = good.encode() + content
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    assert sim_main([str(export_dir), "--mcu", str(path), "--no-tflm-arena"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: MCU profile {path}: {message}") and err.count("\n") == 1


def test_export_format_c_alone_is_one_line(tmp_path, capsys):
    from ctxconv.export.cli import main as export_main

    run = tmp_path / "run"
    shutil.copytree(Path(__file__).resolve().parents[1] / "data" / "golden_run", run)
    code = export_main([str(run), "--int8", "--format", "c", "--out", str(tmp_path / "e")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: --format c needs a model format beside it")
    assert err.count("\n") == 1 and not (tmp_path / "e").exists()


def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def test_ctrl_c_is_one_line_and_exit_130(export_dir, capsys, monkeypatch):
    import ctxconv.ondevice.cli as train_cli
    import ctxconv.sim.bench_cli as bench
    import ctxconv.sim.cli as cli

    monkeypatch.setattr(cli, "simulate", _interrupt)
    monkeypatch.setattr(bench, "simulate", _interrupt)
    monkeypatch.setattr(train_cli, "_bundles", _interrupt)
    for main, argv in ((cli.main, []), (bench.main, ["--mcu", "nrf52840"]),
                       (train_cli.main, [])):
        try:
            code = main([str(export_dir), *argv])
        except KeyboardInterrupt:
            pytest.fail(f"Ctrl-C escaped {main.__module__}.main")
        assert code == 130
        assert capsys.readouterr().err == "interrupted\n"


def test_sim_writes_nothing_into_the_export(export_dir, tmp_path, capsys, monkeypatch):
    def snapshot() -> dict:
        return {p: p.stat().st_mtime_ns for p in export_dir.rglob("*")}

    before = snapshot()
    monkeypatch.chdir(tmp_path)
    assert sim_main([str(export_dir), "--no-tflm-arena", "--images", "20",
                     "--bit-exact-images", "0"]) == 0
    assert snapshot() == before and list(tmp_path.iterdir()) == []
    assert "memory plot" not in capsys.readouterr().out
    assert sim_main([str(export_dir), "--no-tflm-arena", "--images", "20",
                     "--bit-exact-images", "0", "--plot", "m.png"]) == 0
    assert (tmp_path / "m.png").is_file() and snapshot() == before


# ------------------------------------------------- plots and advice that agree with the verdict


def _scratch_heavy(available: str = "between"):
    """Two synthetic blocks on an ESP-NN profile (large conv scratch), with the SRAM set
    so that every block alone fits and the pipeline does not (``between``) or so small
    that nothing saves enough (``tiny``)."""
    import yaml
    from fw_graphs import conv_graph

    from ctxconv.sim.fit import plan_on
    from ctxconv.sim.profiles import _packaged, load_profile, profile_from_dict

    wide = conv_graph(1, h=16, w=16, cin=160, cout=160)
    wide.name = "wide"
    narrow = conv_graph(2, h=16, w=16, cin=160, cout=8)
    narrow.name = "narrow"
    graphs = [wide, narrow]
    plan = plan_on(load_profile("esp32s3"), graphs, 10)
    data = yaml.safe_load(_packaged()["esp32s3"][1].read_text(encoding="utf-8"))
    alone = max(b.arena_bytes for b in plan.blocks)
    limit = (alone + plan.sram_bytes) // 2 if available == "between" else 64 * 1024
    data["reserved"]["sram_bytes"] = data["sram_bytes"] - limit
    profile = profile_from_dict(data, "<scratch-heavy>")
    return plan_on(profile, graphs, 10), profile


def test_memory_plot_draws_what_does_not_fit_and_legend_covers_no_bar():
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from ctxconv.sim.simulate import memory_figure, memory_report

    plan, profile = _scratch_heavy()
    report = memory_report(plan, profile)
    limit_kb = profile.available_sram_bytes / 1024
    assert not report["fits"]
    assert all(b["arena_bytes"] < profile.available_sram_bytes for b in report["blocks"])
    fig = memory_figure(report)
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        ax_s = fig.axes[0]
        bars = [p for p in ax_s.patches if isinstance(p, Rectangle)]
        assert max(p.get_y() + p.get_height() for p in bars) > limit_kb  # the verdict's bar
        assert "does not fit" in fig._suptitle.get_text()
        for ax in fig.axes:
            legend = ax.get_legend().get_window_extent(renderer)
            for p in ax.patches:
                box = p.get_window_extent(renderer)
                if box.width and box.height:
                    assert not legend.overlaps(box), f"legend covers a bar of {ax.get_title()}"
    finally:
        plt.close(fig)


def test_fit_advice_names_kernel_scratch_when_it_dominates():
    from ctxconv.sim.fit import DoesNotFitError, require_fit, scratch_bytes

    plan, profile = _scratch_heavy()
    with pytest.raises(DoesNotFitError) as exc:
        require_fit(plan, profile)
    advice = str(exc.value).split("what to change:")[1]
    scratch = scratch_bytes(plan)
    assert f"kernel scratch dominates: {scratch:,} B of the {plan.arena_bytes:,} B arena" \
           in advice
    assert "the esp-nn kernels request" in advice and "another kernel_library" in advice
    scratch_line, halving_line = (line for line in advice.splitlines()
                                  if "saves" in line and "each change" not in line)
    assert scratch_line.endswith("closes the gap")
    assert "not enough alone" in halving_line


def test_fit_advice_claims_to_close_the_gap_only_when_it_does():
    from ctxconv.sim.fit import explain, problems

    plan, profile = _scratch_heavy("tiny")
    advice = explain(plan, profile, problems(plan, profile)).split("what to change:")[1]
    assert "closes the gap" not in advice
    assert advice.count("not enough alone") == 2
