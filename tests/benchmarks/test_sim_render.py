"""The simulator section says what its stored record holds: the C library's one arena in a
record that has it, and the TFLM agreement only where every row's check passed."""

from __future__ import annotations

import copy
import json

from benchmarks import sim_bench
from benchmarks.provenance import ROOT

STORED = json.loads((ROOT / "benchmarks" / "results" / "sim.json").read_text())


def _without_own_plan(res: dict) -> dict:
    """The stored record as today's simulator writes it (no per-block own plan)."""
    new = copy.deepcopy(res)
    for row in new["bench"]["rows"]:
        row.pop("own_peak_bytes", None)
        row.pop("own_peak_over_tflm", None)
        for b in row["blocks"]:
            b.pop("own_peak_bytes", None)
            b.pop("own_peak_over_tflm", None)
        row["c_arena_bytes"] = 54_000
        row["c_arena_over_tflm"] = round(54_000 / row["tflm_min_arena_bytes"], 4)
    return new


def test_record_with_c_arena_renders_the_c_arena():
    res = _without_own_plan(STORED)
    text = "\n".join(sim_bench.render(res))
    nrf = next(r for r in res["bench"]["rows"] if r["mcu"] == "nrf52840")
    assert "own plan" not in text
    assert f"one arena 52.7 KB / TFLM's measured arena of the largest block = " \
           f"**{nrf['c_arena_over_tflm']:.3f}**" in text
    header = next(line for line in text.splitlines() if line.startswith("| block |"))
    row = next(line for line in text.splitlines() if line.startswith("| block0 |"))
    assert header.count("|") == row.count("|")


def test_tflm_agreement_follows_the_stored_checks():
    assert "(bit-exact with TFLM)" in "\n".join(sim_bench.render(STORED))
    res = copy.deepcopy(STORED)
    res["bench"]["rows"][-1]["bit_exact_vs_tflm"] = False
    text = "\n".join(sim_bench.render(res))
    assert "NOT bit-exact with TFLM in every row" in text and "(bit-exact with TFLM)" not in text
    res["bench"]["rows"][0]["bit_exact_vs_tflm"] = None
    assert "not checked against TFLM" in "\n".join(sim_bench.render(res))
