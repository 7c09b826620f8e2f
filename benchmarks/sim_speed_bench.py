"""How long the simulator's checks take, before and after: writes the "Simulator run time"
section of BENCHMARKS.md.

    python benchmarks/sim_speed_bench.py [EXPORT_DIR] [--before COMMIT]
    # default: benchmarks/runs/fashion_mnist/export, against commit 90d2af6
    python benchmarks/sim_speed_bench.py --render   # markdown from results/sim_speed.json

Runs ``ctxconv-sim EXPORT_DIR --mcu nrf52840`` (the default checks) and the same with
``--backend firmware``, each with the code of an earlier commit (a ``git worktree``) and with
this working tree's, interleaved in one run on one machine, and records per run: the wall
time, the exit code, the accuracy, what was checked (test vectors compared with TFLM, with
the generated C) and whether every check passed. The earlier commit runs on a copy of the
export whose C library its own generator rewrote, so each side builds the C it wrote.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a path: the repository

from benchmarks.provenance import ROOT, relative
from benchmarks.report import provenance_line, start, write_section

BEFORE = "90d2af6"  # the landed main before the one reference pass and the worker shards
MCU = "nrf52840"
#: (name, extra ctxconv-sim arguments, target wall seconds on 2 cores)
VARIANTS = (("default checks", (), 60.0), ("--backend firmware", ("--backend", "firmware"), 150.0))
#: runs ``ctxconv.sim.cli`` of whichever tree is first on PYTHONPATH
SIM = "import sys, ctxconv.sim.cli as c; sys.exit(c.main(sys.argv[1:]))"


def tree_env(tree: Path) -> dict[str, str]:
    """The environment that imports ``ctxconv`` from ``tree``."""
    return {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}


def imported_from(tree: Path) -> Path:
    """Where ``ctxconv`` is imported from with ``tree_env(tree)`` (checked, not assumed)."""
    out = subprocess.run([sys.executable, "-c", "import ctxconv; print(ctxconv.__file__)"],
                         env=tree_env(tree), cwd=tempfile.gettempdir(), text=True,
                         capture_output=True, check=True).stdout.strip()
    return Path(out).resolve().parents[1]


def worktree(commit: str, where: Path) -> Path:
    """A checkout of ``commit`` at ``where`` (removed by :func:`drop_worktree`)."""
    subprocess.run(["git", "worktree", "add", "--detach", "--force", str(where), commit],
                   cwd=ROOT, check=True, capture_output=True)
    return where


def drop_worktree(where: Path) -> None:
    subprocess.run(["git", "worktree", "remove", "--force", str(where)], cwd=ROOT,
                   capture_output=True)
    shutil.rmtree(where, ignore_errors=True)


def export_for(tree: Path, export_dir: Path, work: Path) -> Path:
    """A copy of ``export_dir`` with its C library written by ``tree``'s generator."""
    copy = work / "export"
    shutil.copytree(export_dir, copy, ignore=shutil.ignore_patterns("c"))
    subprocess.run([sys.executable, "-m", "ctxconv.export.cli", str(copy), "--format", "c"],
                   env=tree_env(tree), cwd=work, check=True, capture_output=True)
    return copy


def run_sim(tree: Path, export_dir: Path, args: tuple[str, ...], work: Path) -> dict:
    """One ``ctxconv-sim`` run with ``tree``'s code: wall time, exit code and what it checked."""
    report = work / "report.json"
    report.unlink(missing_ok=True)
    cmd = [sys.executable, "-c", SIM, str(export_dir), "--mcu", MCU, *args, "--json",
           str(report), "--plot", str(work / "memory.png")]
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    with open(work / "log.txt", "w") as log:
        rc = subprocess.run(cmd, env=tree_env(tree), cwd=work, stdout=log,
                            stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - t0
    row = {"wall_seconds": round(wall, 1), "exit_code": rc, "load_average": round(load, 2)}
    if rc == 0 and report.exists():
        rep = json.loads(report.read_text())
        fw = rep.get("firmware") or {}
        row.update(accuracy=rep["accuracy"], images=rep["images"],
                   tflm_images=rep.get("bit_exact_images"),
                   bit_exact_vs_tflm=rep.get("bit_exact_vs_tflm"),
                   c_host_images=(fw.get("host") or {}).get("images"),
                   c_host_bit_exact=(fw.get("host") or {}).get("bit_exact"),
                   emulated_images=(fw.get("emulated") or {}).get("images"),
                   failed_checks=rep.get("failed_checks", []))
    else:
        row["log_tail"] = (work / "log.txt").read_text()[-2000:]
    return row


def main() -> None:
    if (started := start(__doc__, "sim_speed", render,
                         lambda p: p.add_argument("--before", default=BEFORE,
                                                  help=f"the earlier commit (default {BEFORE})"),
                         export_dir="benchmarks/runs/fashion_mnist/export")) is None:
        return
    args, stamp = started
    export_dir = Path(args.export_dir).resolve()
    before_rev = subprocess.run(["git", "rev-parse", "--short", args.before], cwd=ROOT,
                                text=True, capture_output=True, check=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="sim-speed-") as tmp:
        tmp = Path(tmp)
        old = worktree(before_rev, tmp / "before")
        try:
            trees = {"before": old, "now": ROOT}
            for side, tree in trees.items():
                if imported_from(tree) != tree.resolve():
                    raise SystemExit(f"error: the {side} run would import ctxconv from "
                                     f"{imported_from(tree)}, not {tree}")
            exports = {}
            for side, tree in trees.items():
                (tmp / f"{side}-work").mkdir()
                exports[side] = export_for(tree, export_dir, tmp / f"{side}-work")
            rows: dict[str, dict[str, dict]] = {}
            for name, extra, _ in VARIANTS:
                for side in ("before", "now"):  # interleaved: the same load on both
                    work = tmp / f"{side}-{len(rows)}"
                    work.mkdir(exist_ok=True)
                    print(f"{name}: {side} ...", flush=True)
                    rows.setdefault(name, {})[side] = run_sim(trees[side], exports[side],
                                                              extra, work)
                    print(f"  {rows[name][side]['wall_seconds']} s, exit "
                          f"{rows[name][side]['exit_code']}", flush=True)
        finally:
            drop_worktree(old)
    res = {"provenance": stamp, "before": before_rev, "mcu": MCU,
           "export": relative(str(export_dir)), "cpus": os.cpu_count(), "rows": rows,
           "targets": {name: target for name, _, target in VARIANTS}}
    write_section("sim_speed", res, render(res))


def checked(row: dict) -> str:
    """What a run compared, from its report."""
    if row["exit_code"] != 0:
        return f"exit {row['exit_code']}: no report"
    parts = [f"TFLM on {row['tflm_images']:,} of {row['images']:,}"
             + ("" if row["bit_exact_vs_tflm"] else " (NOT bit-exact)")]
    if row.get("c_host_images"):
        parts.append(f"the host-built C on {row['c_host_images']:,}"
                     + ("" if row["c_host_bit_exact"] else " (NOT bit-exact)"))
    if row.get("emulated_images"):
        parts.append(f"{row['emulated_images']} emulated on the Cortex-M4")
    return "; ".join(parts)


def render(res: dict) -> list[str]:
    lines = ["## Simulator run time, before and after (`benchmarks/sim_speed_bench.py`)", "",
             provenance_line(res["provenance"]), "",
             f"`ctxconv-sim {res['export']} --mcu {res['mcu']}` with the code of commit "
             f"{res['before']} (before) and of the commit above (after), before and after "
             f"alternating in one run on {res['cpus']} cores, each side with the C library its "
             "own generator wrote. Wall time of the whole command (TFLM's arena bisection, the "
             "test split, every check, the plot); the load average is the machine's at each "
             "start.", "",
             "| command | before s | after s | after / before | target s | met | "
             "after: accuracy | after: checked (test vectors) | before: checked | "
             "load avg (before, after) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, sides in res["rows"].items():
        old, new = sides["before"], sides["now"]
        target = res["targets"][name]
        ok = new["exit_code"] == 0 and not new.get("failed_checks")
        met = "yes" if ok and new["wall_seconds"] <= target else "**no**"
        acc = f"{100 * new['accuracy']:.2f} %" if "accuracy" in new else "-"
        lines.append(f"| `{name}` | {old['wall_seconds']:.1f} | {new['wall_seconds']:.1f} | "
                     f"{new['wall_seconds'] / old['wall_seconds']:.2f} | ≤ {target:.0f} | {met} "
                     f"| {acc} | {checked(new)} | {checked(old)} | "
                     f"{old['load_average']:.2f}, {new['load_average']:.2f} |")
    missed = [n for n, s in res["rows"].items()
              if not (s["now"]["exit_code"] == 0 and not s["now"].get("failed_checks")
                      and s["now"]["wall_seconds"] <= res["targets"][n])]
    lines += ["", ("Every target met." if not missed else
                   "Target missed: " + ", ".join(f"`{n}`" for n in missed) + "."), ""]
    return lines


if __name__ == "__main__":
    main()
