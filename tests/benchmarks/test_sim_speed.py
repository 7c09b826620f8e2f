"""The run-time section computes its verdicts: a target is met only by a run that exited 0,
passed every check and took no longer than the target; each side imports its own tree."""

from __future__ import annotations

import copy

from benchmarks import sim_speed_bench as bench
from benchmarks.provenance import ROOT

ROW = {"exit_code": 0, "load_average": 0.5, "accuracy": 0.9351, "images": 10000,
       "tflm_images": 1000, "bit_exact_vs_tflm": True, "c_host_images": 10000,
       "c_host_bit_exact": True, "emulated_images": 20, "failed_checks": []}
RES = {"provenance": {"machine": "m", "date": "2026-12-04", "commit": "abc1234",
                      "command": "python benchmarks/sim_speed_bench.py"},
       "before": "90d2af6", "mcu": "nrf52840", "export": "e", "cpus": 2,
       "targets": {"default checks": 60.0, "--backend firmware": 150.0},
       "rows": {"default checks": {"before": {**ROW, "wall_seconds": 300.0},
                                   "now": {**ROW, "wall_seconds": 59.0}},
                "--backend firmware": {"before": {**ROW, "wall_seconds": 880.0},
                                       "now": {**ROW, "wall_seconds": 151.0}}}}


def _row(text: str, name: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(f"| `{name}`"))


def test_met_and_missed_targets_follow_the_numbers():
    text = "\n".join(bench.render(RES))
    assert "| 300.0 | 59.0 | 0.20 | ≤ 60 | yes |" in _row(text, "default checks")
    assert "| 880.0 | 151.0 | 0.17 | ≤ 150 | **no** |" in _row(text, "--backend firmware")
    assert "Target missed: `--backend firmware`." in text
    assert "TFLM on 1,000 of 10,000; the host-built C on 10,000" in text


def test_a_fast_run_that_failed_a_check_meets_nothing():
    res = copy.deepcopy(RES)
    res["rows"]["--backend firmware"]["now"].update(wall_seconds=10.0,
                                                    failed_checks=["not bit-exact"])
    res["rows"]["default checks"]["now"] = {"exit_code": 3, "load_average": 0.1,
                                            "wall_seconds": 5.0}
    text = "\n".join(bench.render(res))
    assert "**no**" in _row(text, "default checks") and "exit 3: no report" in text
    assert "**no**" in _row(text, "--backend firmware")
    assert "Target missed: `default checks`, `--backend firmware`." in text


def test_each_side_imports_its_own_tree():
    assert bench.imported_from(ROOT) == ROOT.resolve()
