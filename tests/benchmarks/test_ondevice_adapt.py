"""On-device adaptation benchmark: fit verdicts from the planner, learning rates chosen
without the test images, the float export made by a documented command."""

import json
import sys

import pytest

from benchmarks import report


def test_adaptation_on_the_tiny_export(digits_run, digits_export, tmp_path, monkeypatch, capsys):
    from benchmarks import ondevice_adapt_bench as bench
    from ctxconv.blockgraph.bundle import load_export
    from ctxconv.ondevice import ExportModel, block_report, geometries
    from ctxconv.sim.profiles import load_profile

    monkeypatch.setattr(report, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(report, "BENCHMARKS_MD", tmp_path / "BENCHMARKS.md")
    monkeypatch.setattr(bench, "LR_GRID", (0.01, 0.1))
    monkeypatch.setattr(bench, "EPOCHS", 1)
    export_dir = digits_run / "export"
    bundle = load_export(export_dir)
    sizes = []
    real_accuracy = bench.accuracy
    monkeypatch.setattr(bench, "accuracy", lambda b, x, y: sizes.append(len(y))
                        or real_accuracy(b, x, y))
    float_dir = tmp_path / "export-float"
    monkeypatch.setattr(sys, "argv", ["ondevice_adapt_bench.py", str(export_dir),
                                      "--float-export", str(float_dir)])
    bench.main()
    out = capsys.readouterr().out
    assert f"{float_dir} is missing: creating it with `ctxconv-export {digits_run} --out" in out
    assert (float_dir / "manifest.json").is_file()
    res = json.loads((tmp_path / "results" / "ondevice_adapt.json").read_text())
    n_train, n_test = res["train_vectors"], res["test_vectors"]
    n_held = round(0.2 * n_train)
    assert res["held_out"] == n_held
    # learning rates chosen on held-out adaptation images; the test set is read for the
    # clean and shifted baselines and once per mode after training, never while choosing
    assert sizes == [n_test, n_test] + ([n_held] * 2 + [n_test]) * 3
    model = ExportModel(geometries(bundle), bundle.graphs, [len(b) for b in bundle.tflite],
                        bundle.tflite)
    profile = load_profile("nrf52840")
    index = len(bundle.blocks) - 1
    assert res["batch_from_planner"] and res["batch"] == block_report(
        model, index, profile, 1, update="bias")["largest_batch"]
    for row in res["rows"]:
        expect = block_report(model, index, profile, res["batch"], update=row["update"])
        assert row["fit"]["fits"] == expect["fits"]
        assert row["fit"]["sram_bytes"] == expect["sram_bytes"]
        assert row["lr"] in (0.01, 0.1)
    text = (tmp_path / "results" / "ondevice_adapt.md").read_text()
    assert f"fits nrf52840 at batch {res['batch']} (planner" in text
    # a batch too large for bias-only training: the verdict follows the planner
    big = bench.fit_verdicts(bundle, index, 4096)["bias"]
    assert big["fits"] is False and big["fits_sram"] is False
    assert "\n".join(bench.render(res)) == text


def test_no_batch_fits_is_a_clear_error(digits_run, digits_export, tmp_path, monkeypatch):
    from benchmarks import ondevice_adapt_bench as bench

    monkeypatch.setattr(bench, "fit_verdicts", lambda *a: {"bias": {"largest_batch": 0}})
    monkeypatch.setattr(bench, "ensure_float_export", lambda e, f: (f, None))
    monkeypatch.setattr(sys, "argv", ["ondevice_adapt_bench.py", str(digits_run / "export")])
    with pytest.raises(SystemExit, match="error: bias-only training of block 1 fits the "
                                         "nrf52840 at no batch; pass --batch"):
        bench.main()
