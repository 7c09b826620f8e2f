"""Forward-only accuracy on Fashion-MNIST: the search for the best recipe, the simultaneous
schedule against the sequential one, and backprop at the same budget.

    python benchmarks/accuracy_bench.py train --out DIR --device cuda   # GPU: ~8 min
    python benchmarks/accuracy_bench.py evaluate --out DIR              # int8 export + sim
    python benchmarks/accuracy_bench.py render --out DIR                # BENCHMARKS.md section

``train`` runs three phases, each ``ctxconv-train`` a subprocess:

1. alone on the machine, timed: the default model (``experiment=fashion_mnist``) under
   the sequential schedule, the simultaneous schedule and backprop (validation only);
2. side by side (one CPU thread each), validation only unless named a comparison: the
   candidates (forward-only, group ``fo``; backprop at the same budgets, group ``bp``),
   three seeds each, and the sequential/simultaneous comparison on the default model
   (its test split read once per run: a fixed setting, not a choice);
3. per group, the candidate with the best mean validation accuracy over its three seeds
   makes the finals: each seed reads its test split once (``resume=true
   evaluate_test=true``, no training). Nothing is chosen after a test reading.

``results_train.json`` is rewritten after every phase and the finals' run folders are
tarred (one per run), so a run stopped at its deadline keeps what it finished.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from run_pool import T0, Pool, Run, machine_info, summary  # noqa: E402

SEEDS = (0, 1, 2)
AUG = ["trainer.augment=2", "trainer.flip=true"]
#: batch 256 with the learning rate scaled by its square root (Adam): half the steps of the
#: default's batch 128, so a side-by-side search fits its deadline
BIG_BATCH = ["data.batch_size=256", "trainer.lr=2.8e-3"]
SIM = ["trainer.schedule=simultaneous"]
ARCHS = {  # every one with int8 weights (convs and every block's head) under 1 MB
    "deep4": "model.blocks=[[1,64,3],[1,96,3],[2,192,3],[2,256,3]]",
    "deep5": "model.blocks=[[1,64,3],[1,64,3],[2,128,3],[1,128,3],[2,256,3]]",
    "wide3": "model.blocks=[[1,96,3],[2,192,3],[2,256,3]]",
}
BP = ["trainer.method=backprop"]
#: group -> candidate -> overrides (fo: forward-only; bp: backprop at the same budgets)
CANDIDATES: dict[str, dict[str, list[str]]] = {
    "fo": {
        "deep4_sim_e30": [ARCHS["deep4"], *SIM, "trainer.epochs=30", *AUG, *BIG_BATCH],
        "deep4_sim_e30_ls": [ARCHS["deep4"], *SIM, "trainer.epochs=30", *AUG, *BIG_BATCH,
                             "trainer.label_smoothing=0.1"],
        "deep5_sim_e30": [ARCHS["deep5"], *SIM, "trainer.epochs=30", *AUG, *BIG_BATCH],
        "wide3_sim_e30": [ARCHS["wide3"], *SIM, "trainer.epochs=30", *AUG, *BIG_BATCH],
        "deep4_seq_e12": [ARCHS["deep4"], "trainer.epochs=12", *AUG, *BIG_BATCH],
    },
    "bp": {
        "deep4_bp_e30": [ARCHS["deep4"], *BP, "trainer.epochs=30", *AUG, *BIG_BATCH],
        "deep5_bp_e30": [ARCHS["deep5"], *BP, "trainer.epochs=30", *AUG, *BIG_BATCH],
    },
}
#: the start order of the side-by-side phase: what every verdict needs first
START_ORDER = ["deep4_sim_e30", "deep4_bp_e30", "default_sequential", "default_simultaneous",
               "deep4_sim_e30_ls", "deep5_sim_e30", "wide3_sim_e30", "deep5_bp_e30",
               "deep4_seq_e12"]
#: the default model, alone on the machine: seconds per epoch side by side in one run
TIMED = {"sequential": [], "simultaneous": SIM, "backprop": ["trainer.method=backprop"]}
#: the schedules compared on the default model, three seeds each, test read once per run
SCHEDULES = {"default_sequential": [], "default_simultaneous": SIM}
SIDE_BY_SIDE_CACHE = ["trainer.cache_budget_gb=4"]  # many processes share one GPU


def overridden(settings: list[str]) -> list[str]:
    """Each key once, at its last value (as Hydra would apply them)."""
    keys = [o.split("=", 1)[0] for o in settings]
    return [o for i, o in enumerate(settings) if keys[i] not in keys[i + 1:]]


def side_by_side_runs(extra: list[str]) -> list[Run]:
    """Every candidate (validation only) and the schedule comparison (test read once), three
    seeds each, in ``START_ORDER`` (a candidate's seeds together)."""
    plan = {name: (group, ov, False) for group, cands in CANDIDATES.items()
            for name, ov in cands.items()}
    plan.update({name: ("schedules", ov, True) for name, ov in SCHEDULES.items()})
    return [Run(f"{name}_seed{s}", plan[name][0], overridden([*plan[name][1], *extra]), seed=s,
                test=plan[name][2]) for name in START_ORDER for s in SEEDS]


def timed_runs(extra: list[str]) -> list[Run]:
    return [Run(f"timed_{name}", "timed", overridden([*overrides, *extra]), test=False,
                threads=None) for name, overrides in TIMED.items()]


def attach_metrics(out: Path, record: dict) -> dict:
    """Each run's per-epoch rows (block, epoch, seconds, validation accuracy) beside it."""
    for name, run in record.items():
        path = out / "runs" / name / "metrics.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()
                ] if path.is_file() else []
        run["epochs"] = [[r["block"], r["epoch"], round(r["seconds"], 3), r["val_acc"]]
                         for r in rows]
    return record


def mean_val(out: Path, name: str) -> float | None:
    """Mean multipass validation accuracy of a candidate's seeds; None unless all finished."""
    vals = []
    for s in SEEDS:
        res = summary(out, Run(f"{name}_seed{s}", "", []))
        if res is None:
            return None
        vals.append(res["val_accuracy"]["multipass"])
    return sum(vals) / len(vals)


def best_candidate(out: Path, group: str) -> str | None:
    """The candidate of ``group`` with the best mean validation accuracy (all seeds done)."""
    means = {n: m for n in CANDIDATES[group] if (m := mean_val(out, n)) is not None}
    return max(means, key=means.__getitem__) if means else None


def read_test(out: Path, group: str, chosen: str, device: str) -> dict:
    """The chosen candidate's seeds as the group's finals, each reading its test split once
    (the reads run side by side)."""
    procs = {}
    for s in SEEDS:
        src, dst = out / "runs" / f"{chosen}_seed{s}", out / "runs" / f"final_{group}_seed{s}"
        if dst.exists():
            raise SystemExit(f"{dst} exists: remove it to read the test split again")
        shutil.copytree(src, dst)
        cmd = [sys.executable, "-m", "ctxconv.train.cli", f"hydra.run.dir={dst}", "resume=true",
               "evaluate_test=true", "trainer.progress=false", f"trainer.device={device}"]
        procs[dst.name] = subprocess.Popen(cmd, cwd=ROOT, stdout=open(dst / "test.log", "w"),
                                           stderr=subprocess.STDOUT)
    runs = {}
    for name, proc in procs.items():
        runs[name] = {"returncode": proc.wait(), "selected_from": chosen,
                      "summary": summary(out, Run(name, group, []))}
    return runs


def train(out: Path, device: str, jobs: int, deadline: float, copy_to: Path | None,
          extra: list[str]) -> dict:
    """The three phases; ``copy_to`` gets results and tars after each (a GPU job's $OUT)."""
    import report

    out.mkdir(parents=True, exist_ok=True)
    results: dict = {"machine": machine_info(), "provenance": report.provenance(),
                     "device": device, "candidates": CANDIDATES, "phases": {}}

    def save() -> None:
        (out / "results_train.json").write_text(json.dumps(results, indent=1))
        if copy_to is not None:
            copy_to.mkdir(parents=True, exist_ok=True)
            shutil.copy(out / "results_train.json", copy_to / "results_train.json")

    alone = Pool(out, device, [], 1, T0 + deadline)
    alone.queue = timed_runs(extra)
    alone.drain()
    results["phases"]["timed"] = attach_metrics(out, alone.record())
    save()
    pool = Pool(out, device, SIDE_BY_SIDE_CACHE, jobs, T0 + deadline - 45)  # room to read test
    pool.queue = side_by_side_runs(extra)
    pool.drain(tick=1.0)
    results["phases"]["side_by_side"] = attach_metrics(out, pool.record())
    save()
    results["selected"], results["finals"] = {}, {}
    for group in CANDIDATES:
        chosen = best_candidate(out, group)
        if chosen is None:
            print(f"({group}): no candidate finished all {len(SEEDS)} seeds", flush=True)
            continue
        results["selected"][group] = chosen
        results["finals"].update(read_test(out, group, chosen, device))
        save()
    if copy_to is not None:  # the forward-only finals, for the int8 export
        for name in (n for n in results["finals"] if n.startswith("final_fo_")):
            with tarfile.open(copy_to / f"{name}.tar", "w") as tar:
                tar.add(out / "runs" / name, arcname=name)
    save()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["train"])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--jobs", type=int, default=15)
    parser.add_argument("--deadline", type=float, default=480.0, help="seconds for training")
    parser.add_argument("--copy-to", type=Path, default=None,
                        help="a folder that gets results and the finals' tars after each phase")
    parser.add_argument("--extra", nargs="*", default=[],
                        help="overrides for every run (e.g. data.data_dir=DIR)")
    args = parser.parse_args()
    t0 = time.time()
    train(args.out, args.device, args.jobs, args.deadline, args.copy_to, args.extra)
    print(f"done in {time.time() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()
