"""How long the README's quick start and test suite take: writes the "Quick start and test
suite" section of BENCHMARKS.md, whose figures the README quotes.

    python benchmarks/quickstart_bench.py [--no-tests]
    python benchmarks/quickstart_bench.py --render   # markdown from results/quickstart.json

Runs the quick start's three commands on the embedded default (digits) in a fresh folder,
then ``python -m pytest`` in the repository (the README's test command), and records per
command the wall time, the CPU time of its processes (user + system), the machine's load
average at its start and the exit code; for the suite also what pytest counted.
"""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a path: the repository

from benchmarks.provenance import ROOT
from benchmarks.report import provenance_line, start, write_section

#: the quick start's commands, in order (``{run}``: the run directory)
QUICK_START = (("train", "ctxconv-train hydra.run.dir={run} overwrite=true"),
               ("export", "ctxconv-export {run} --int8"),
               ("sim", "ctxconv-sim {run}/export --mcu nrf52840"))
TESTS = "python -m pytest"
_COUNTS = re.compile(r"(\d+) (passed|failed|skipped|deselected|errors?|xfailed|xpassed)")


def timed(cmd: str, cwd: Path, log: Path) -> dict:
    """Run ``cmd`` (a shell word list): wall seconds, CPU seconds of its processes, the load
    average at its start, the exit code."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    with open(log, "w") as out:
        rc = subprocess.run(cmd.split(), cwd=cwd, stdout=out, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"command": cmd, "wall_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1),
            "load_average": round(load, 2), "exit_code": rc}


def pytest_counts(text: str) -> dict[str, int]:
    """What pytest's last summary line counted (``{"passed": 792, "deselected": 1}``)."""
    lines = [ln for ln in text.splitlines() if " in " in ln and _COUNTS.search(ln)]
    if not lines:
        return {}
    return {kind.rstrip("s") if kind.startswith("error") else kind: int(n)
            for n, kind in _COUNTS.findall(lines[-1])}


def main() -> None:
    if (started := start(__doc__, "quickstart", render,
                         lambda p: p.add_argument("--no-tests", action="store_true",
                                                  help="time the quick start only"))) is None:
        return
    args, stamp = started
    res: dict = {"provenance": stamp, "cpus": os.cpu_count(), "quick_start": []}
    with tempfile.TemporaryDirectory(prefix="quickstart-") as tmp:
        work = Path(tmp)
        for name, cmd in QUICK_START:
            row = timed(cmd.format(run="runs/quickstart"), work, work / f"{name}.log")
            print(f"{row['command']}: {row['wall_seconds']} s, exit {row['exit_code']}",
                  flush=True)
            res["quick_start"].append(row)
            if row["exit_code"] != 0:
                raise SystemExit(f"error: `{row['command']}` exited {row['exit_code']}:\n"
                                 + (work / f"{name}.log").read_text()[-2000:])
        if not args.no_tests:  # the suite sees the stored record (and README) as committed
            log = work / "pytest.log"
            row = timed(TESTS, ROOT, log)
            row["counts"] = pytest_counts(log.read_text())
            print(f"{TESTS}: {row['wall_seconds']} s, {row['counts']}", flush=True)
            res["tests"] = row
            failed = [ln for ln in log.read_text().splitlines() if ln.startswith("FAILED")]
    write_section("quickstart", res, render(res))
    if not args.no_tests and res["tests"]["exit_code"] != 0:
        raise SystemExit(f"error: `{TESTS}` exited {res['tests']['exit_code']} (recorded):\n"
                         + "\n".join(failed))


def minutes(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m} min {s} s" if m else f"{seconds:.1f} s"


def render(res: dict) -> list[str]:
    lines = ["## Quick start and test suite (`benchmarks/quickstart_bench.py`)", "",
             provenance_line(res["provenance"]), "",
             f"The README's commands on {res['cpus']} cores, one after the other: the quick "
             "start's three in a fresh folder, then the test suite in the repository. CPU "
             "time: user + system of the command's processes. Load average: the machine's at "
             "each start.", "",
             "| command | wall | CPU time | load average | exit |", "|---|---|---|---|---|"]
    rows = list(res["quick_start"]) + ([res["tests"]] if "tests" in res else [])
    for row in rows:
        lines.append(f"| `{row['command']}` | {minutes(row['wall_seconds'])} | "
                     f"{minutes(row['cpu_seconds'])} | {row['load_average']:.1f} | "
                     f"{row['exit_code']} |")
    if "tests" in res:
        counts = res["tests"]["counts"]
        lines += ["", "Test suite: " + ", ".join(f"{n} {kind}" for kind, n in counts.items())
                  + (" (0 skipped)" if "skipped" not in counts else "") + "."]
    return lines + [""]


if __name__ == "__main__":
    main()
