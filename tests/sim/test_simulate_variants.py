"""``ctxconv-sim`` on exports with FiLM (MUL), energy goodness (MUL, MEAN) and per-sample L2
normalisation: the planned arena lets TFLM run every block, and the report is complete."""

from __future__ import annotations

import json

import pytest

from ctxconv.sim.cli import main as sim_main


@pytest.mark.parametrize("name", ["film", "energy", "l2"])
def test_sim_cli_runs_each_variant(name, variant_export, tmp_path, capsys):
    manifest = variant_export(name)
    out = tmp_path / "report.json"
    code = sim_main([manifest["export_dir"], "--mcu", "nrf52840", "--json", str(out),
                     "--plot", str(tmp_path / "m.png")])
    text = capsys.readouterr()
    assert code == 0, text.err
    rep = json.loads(out.read_text())
    assert rep["fits"] and rep["bit_exact_vs_tflm"], rep
    assert rep["bit_exact_images"] == rep["test_vectors"]
    assert abs(rep["accuracy"] - rep["export_accuracy"]) <= 0.01  # as for the digits export
    assert rep["macs"] > 0 and rep["latency_ms"] > 0 and rep["energy_mj"] > 0
    assert rep["planner_never_below_tflm"]
    for b in rep["blocks"]:  # the host-planned arena runs TFLM, within 10 % of its minimum
        tflm, planned = b["tflm_min_arena_bytes"], b["planned_reference_arena_bytes"]
        assert tflm <= planned <= 1.1 * tflm, b
    assert "verdict: FITS" in text.out
