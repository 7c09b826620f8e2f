"""Peak training memory: measured in a fresh process beside the accounting; the goal is
judged on the measured ratio."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"

TINY = {"blocks": [[1, 8, 3], [2, 16, 3]], "image_size": 8, "in_channels": 1,
        "num_classes": 10, "max_grid": 2}


def _probe(variant: str, batch: int = 64) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCH / "memory_probe.py"), variant,
                           json.dumps(TINY), "--batch", str(batch)], capture_output=True,
                          text=True, cwd=BENCH.parent)


def test_probe_sees_the_memory_a_step_must_hold():
    """At batch 1024 the step must hold at least the float32 input batch and block 0's
    conv output (8 channels at 8x8, kept for backward): a probe that read the peak before
    the step falls below that."""
    batch = 1024
    floor = 4 * batch * (1 * 8 * 8 + 8 * 8 * 8)  # input + block 0's conv output, float32
    done = _probe("backprop", batch)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["peak_above_baseline_bytes"] >= floor


def test_probe_measures_a_step_above_its_baseline():
    done = _probe("backprop")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["variant"] == "backprop" and out["batch"] == 64 and out["threads"] == 2
    assert out["peak_rss_bytes"] - out["baseline_rss_bytes"] == out["peak_above_baseline_bytes"]
    assert out["peak_above_baseline_bytes"] > 0


def test_probe_rejects_an_unknown_variant():
    done = _probe("block7")
    assert done.returncode == 1
    assert "error: unknown variant 'block7' (block0..block1 or backprop)" in done.stderr


def _memory_section(measured_ratio: float | None) -> dict:
    block = {"weights": 1, "gradients": 1, "optimizer_state": 2, "saved_activations": 10,
             "input_batch": 1, "total": 15}
    sec = {"batch": 128, "forward_only_per_block": [block], "backprop": {**block, "total": 30},
           "forward_only_peak": 15, "ratio_forward_only_over_backprop": 0.5, "goal_ratio": 0.5,
           "provenance": {"machine": "m", "date": "d", "commit": "c", "command": "x"}}
    if measured_ratio is not None:
        sec["measured"] = {"method": "peak RSS", "threads": 2, "repeats": 1,
                           "runs_bytes": {"block0": [2**20], "backprop": [2**21]},
                           "median_bytes": {"block0": 2**20, "backprop": 2**21},
                           "ratio_forward_only_over_backprop": measured_ratio}
    return sec


@pytest.mark.parametrize(("ratio", "verdict"), [(0.77, "not met"), (0.45, "met")])
def test_goal_is_judged_on_the_measured_ratio(ratio, verdict):
    from benchmarks import train_bench

    text = train_bench.render({"memory": _memory_section(ratio)})
    assert f"accounted **0.500**, measured **{ratio:.3f}**" in text
    assert f"judged on the measured ratio: **{verdict}** ({ratio:.3f})" in text
    assert "| forward-only, block 0 |" in text and "| 1.00 MiB |" in text


def test_accounting_alone_makes_no_verdict():
    from benchmarks import train_bench

    text = train_bench.render({"memory": _memory_section(None)})
    assert "not measured" in text and "judged" not in text
