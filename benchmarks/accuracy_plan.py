"""What the accuracy benchmark trains: its candidates as named experiments
(``ctxconv/configs/experiment/accuracy/``), the schedules compared on the default model and
the runs timed alone. Every run is ``ctxconv-train experiment=<name>`` with only the run's own
overrides (a seed, the data folder)."""

from __future__ import annotations

from pathlib import Path

from benchmarks.runner import Run, overridden, summary

SEEDS = (0, 1, 2)
#: group -> its candidates, each the named experiment ``accuracy/<name>`` (fo: forward-only;
#: bp: backprop at the same budgets); every one has int8 weights (convs and every block's
#: head) under 1 MB
CANDIDATES: dict[str, list[str]] = {
    "fo": ["deep4_sim_e30", "deep4_sim_e30_ls", "deep5_sim_e30", "wide3_sim_e30",
           "deep4_seq_e12"],
    "bp": ["deep4_bp_e30", "deep5_bp_e30"],
}
#: the start order of the side-by-side phase: what every verdict needs first
START_ORDER = ["deep4_sim_e30", "deep4_bp_e30", "default_sequential", "default_simultaneous",
               "deep4_sim_e30_ls", "deep5_sim_e30", "wide3_sim_e30", "deep5_bp_e30",
               "deep4_seq_e12"]
#: the default model, alone on the machine: seconds per epoch side by side in one run
TIMED = {"sequential": "fashion_mnist", "simultaneous": "fashion_mnist_simultaneous",
         "backprop": "fashion_mnist_backprop"}
#: the schedules compared on the default model, three seeds each, test read once per run
SCHEDULES = {"default_sequential": "fashion_mnist",
             "default_simultaneous": "fashion_mnist_simultaneous"}
SIDE_BY_SIDE_CACHE = ["trainer.cache_budget_gb=4"]  # many processes share one GPU


def side_by_side_runs(extra: list[str]) -> list[Run]:
    """Every candidate (validation only) and the schedule comparison (test read once), three
    seeds each, in ``START_ORDER`` (a candidate's seeds together)."""
    plan = {name: (group, f"accuracy/{name}", False) for group, cands in CANDIDATES.items()
            for name in cands}
    plan.update({name: ("schedules", experiment, True) for name, experiment in SCHEDULES.items()})
    return [Run(f"{name}_seed{s}", plan[name][0], overridden([], extra), seed=s,
                test=plan[name][2], experiment=plan[name][1]) for name in START_ORDER
            for s in SEEDS]


def timed_runs(extra: list[str]) -> list[Run]:
    return [Run(f"timed_{name}", "timed", overridden([], extra), test=False, threads=None,
                experiment=experiment) for name, experiment in TIMED.items()]


def mean_val(out: Path, name: str) -> float | None:
    """Mean multipass validation accuracy of a candidate's seeds; None unless all finished."""
    vals = []
    for s in SEEDS:
        res = summary(out, f"{name}_seed{s}")
        if res is None:
            return None
        vals.append(res["val_accuracy"]["multipass"])
    return sum(vals) / len(vals)


def best_candidate(out: Path, group: str) -> str | None:
    """The candidate of ``group`` with the best mean validation accuracy (all seeds done)."""
    means = {n: m for n in CANDIDATES[group] if (m := mean_val(out, n)) is not None}
    return max(means, key=means.__getitem__) if means else None
