"""The README's timings and test count are the stored quick-start section's, row for row;
the section reads pytest's own summary line."""

from __future__ import annotations

from benchmarks import quickstart_bench as bench
from benchmarks import report

README = (report.ROOT / "README.md").read_text()


def test_readme_rows_are_the_stored_measurement():
    res = report.load_results("quickstart")
    assert res, "benchmarks/results/quickstart.json is missing: run benchmarks/quickstart_bench.py"
    rows = [line for line in bench.render(res) if line.startswith("| `")]
    assert len(rows) == len(bench.QUICK_START) + ("tests" in res), rows
    for row in rows:
        assert row in README, f"README lacks the measured row {row}"
    if "tests" in res:  # a record of the quick start alone has no suite to quote
        counts = res["tests"]["counts"]
        assert res["tests"]["exit_code"] == 0 and counts.get("passed", 0) > 0
        assert "failed" not in counts and "skipped" not in counts
        assert f"{counts['passed']} tests passed" in README


def test_pytest_counts_read_the_last_summary_line():
    log = ("tests/a.py ....\n= 3 passed in 1.0s =\n"
           "=========== 790 passed, 2 skipped, 1 deselected in 520.31s (0:08:40) ===========\n")
    assert bench.pytest_counts(log) == {"passed": 790, "skipped": 2, "deselected": 1}
    assert bench.pytest_counts("= 1 failed, 3 errors in 2s =") == {"failed": 1, "error": 3}
    assert bench.pytest_counts("no summary") == {}


def test_minutes_format():
    assert bench.minutes(6.34) == "6.3 s"
    assert bench.minutes(413) == "6 min 53 s"
