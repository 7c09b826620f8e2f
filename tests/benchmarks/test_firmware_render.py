"""The firmware section says on how many vectors each mode was compared."""

from __future__ import annotations

import copy
import json

from benchmarks import firmware_bench
from benchmarks.provenance import ROOT

STORED = json.loads((ROOT / "benchmarks" / "results" / "firmware.json").read_text())


def test_a_mode_run_on_the_first_chunk_says_so():
    res = copy.deepcopy(STORED)
    host = res["reports"]["nrf52840"]["firmware"]["host"]
    host["modes"]["multipass"]["images"], host["modes"]["onepass"]["images"] = 500, 10_000
    line = next(ln for ln in firmware_bench.render(res) if ln.startswith("- Host build"))
    assert "multipass (on the first 500) " in line and "onepass (on the first" not in line
    host["modes"]["multipass"]["images"] = 10_000
    line = next(ln for ln in firmware_bench.render(res) if ln.startswith("- Host build"))
    assert "on the first" not in line
