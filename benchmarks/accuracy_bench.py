"""Forward-only accuracy on Fashion-MNIST: the search for the best recipe, the simultaneous
schedule against the sequential one, and backprop at the same budget.

    python benchmarks/accuracy_bench.py train --out DIR --device cuda   # GPU: ~8 min
    python benchmarks/accuracy_bench.py evaluate --out DIR              # int8 export + sim
    python benchmarks/accuracy_bench.py store --out DIR --train-results DIR/results_train.json
    python benchmarks/accuracy_bench.py render --out DIR                # from the stored JSON

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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a path: the repository

from benchmarks.accuracy_plan import (
    CANDIDATES,
    SEEDS,
    SIDE_BY_SIDE_CACHE,
    best_candidate,
    side_by_side_runs,
    timed_runs,
)
from benchmarks.accuracy_render import render, seed_values
from benchmarks.provenance import ROOT, machine_info, provenance
from benchmarks.report import render_section, write_section
from benchmarks.runner import (
    T0,
    Pool,
    copy_to_read_test,
    experiment_settings,
    export_int8,
    metrics,
    simulate,
    summary,
)

TRAIN_COMMIT = "f2def22"  # the device ran this commit's tree; its copy's git metadata was stale
EVALUATE_COMMIT = "6e05258"  # the export and simulator code the evaluation ran


def recorded_candidates() -> dict[str, dict[str, list[str]]]:
    """Each candidate's settings (what its named experiment sets), as the record keeps them."""
    return {g: {n: experiment_settings(f"accuracy/{n}") for n in names}
            for g, names in CANDIDATES.items()}


def attach_metrics(out: Path, record: dict) -> dict:
    """Each run's per-epoch rows (block, epoch, seconds, validation accuracy) beside it."""
    for name, run in record.items():
        run["epochs"] = [[r["block"], r["epoch"], round(r["seconds"], 3), r["val_acc"]]
                         for r in metrics(out, name)]
    return record


def read_test(out: Path, group: str, chosen: str, device: str) -> dict:
    """The chosen candidate's seeds as the group's finals, each reading its test split once
    (the reads run side by side)."""
    procs = {}
    for s in SEEDS:
        dst = out / "runs" / f"final_{group}_seed{s}"
        cmd = copy_to_read_test(out / "runs" / f"{chosen}_seed{s}", dst, device)
        procs[dst.name] = subprocess.Popen(cmd, cwd=ROOT, stdout=open(dst / "test.log", "w"),
                                           stderr=subprocess.STDOUT)
    return {name: {"returncode": proc.wait(), "selected_from": chosen,
                   "summary": summary(out, name)} for name, proc in procs.items()}


def train(out: Path, device: str, jobs: int, deadline: float, copy_to: Path | None,
          extra: list[str]) -> dict:
    """The three phases; ``copy_to`` gets results and tars after each (a GPU job's $OUT)."""
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {"machine": machine_info(), "provenance": provenance(),
                     "device": device, "candidates": recorded_candidates(), "phases": {}}

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


def evaluate(out: Path, mcu: str, firmware_images: int) -> dict:
    """Each forward-only final: int8 export, the simulator on ``mcu`` (every test vector),
    and for seed 0 the firmware backend (the generated C built for the MCU's core, its RAM
    and flash read from the binary, ``firmware_images`` test vectors emulated)."""
    done = {}
    for s in SEEDS:
        run = out / "runs" / f"final_fo_seed{s}"
        if not (run / "summary.json").is_file():
            continue
        entry: dict = {}
        entry["export_rc"], entry["export_seconds"] = export_int8(run)
        if entry["export_rc"] != 0:
            entry["error"] = (run / "export.log").read_text().strip().splitlines()[-1:]
            done[run.name] = entry
            continue
        manifest = json.loads((run / "export" / "manifest.json").read_text())
        entry["int8_weight_bytes"] = sum(b["params"] for b in manifest["blocks"])
        entry["manifest_accuracy"] = manifest.get("accuracy")
        sim = run / f"sim_{mcu}.json"
        entry["sim_rc"], entry["sim_seconds"] = simulate(
            run / "export", mcu, sim, run / "sim.log", "--bit-exact-images", "200")
        entry["sim"] = json.loads(sim.read_text()) if entry["sim_rc"] in (0, 4) else None
        if s == SEEDS[0]:
            fw = run / f"firmware_{mcu}.json"
            entry["firmware_rc"], entry["firmware_seconds"] = simulate(
                run / "export", mcu, fw, run / "firmware.log", "--backend", "firmware",
                "--images", str(firmware_images), "--emulated-images", "2")
            entry["firmware"] = json.loads(fw.read_text()) if fw.is_file() else None
        done[run.name] = entry
        (out / "evaluated.json").write_text(json.dumps(done, indent=1))
        print(f"{run.name}: export rc {entry['export_rc']}, sim rc {entry['sim_rc']}",
              flush=True)
    return done


def store(out: Path, train_results: Path) -> None:
    """The section's JSON (the device's training record, this machine's evaluation) and
    markdown."""
    tr = json.loads(train_results.read_text())
    side = tr["phases"]["side_by_side"]
    for group, cands in CANDIDATES.items():  # a group the deadline stopped before its reads
        means = {n: sum(v) / len(v) for n in cands if len(v := seed_values(side, n, "val")) == 3}
        if group not in tr["selected"] and means:
            tr["selected"][group] = max(means, key=means.__getitem__)
    tr["provenance"]["commit"] = TRAIN_COMMIT
    m = tr["machine"]
    tr["provenance"]["machine"] = (f"{m['gpu']} GPU, {m['cpus']} cores, Python {m['python']}, "
                                   f"torch {m['torch']}")
    tr["provenance"]["command"] = ("python benchmarks/accuracy_bench.py train --out DIR "
                                   "--device cuda --jobs 15 --deadline 500 --extra "
                                   "data.data_dir=DATA")
    tr["provenance"]["note"] = ("training on the GPU machine; the forward-only finals' test "
                                "reads ran after the deadline, the backprop finals' reads "
                                "were stopped at the command's time limit")
    res = {"train": tr, "evaluated": json.loads((out / "evaluated.json").read_text()),
           "provenance": {**provenance(), "commit": EVALUATE_COMMIT,
                          "command": "python benchmarks/"
                          "accuracy_bench.py evaluate --out DIR", "note": "int8 export and "
                          "simulator of the forward-only finals on this machine"}}
    write_section("accuracy", res, render(res))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["train", "evaluate", "store", "render"])
    parser.add_argument("--train-results", type=Path, default=None,
                        help="store: the results_train.json the training wrote")
    parser.add_argument("--mcu", default="nrf52840")
    parser.add_argument("--firmware-images", type=int, default=200)
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
    if args.command == "render":
        render_section("accuracy", render)
    elif args.command == "store":
        store(args.out, args.train_results)
    elif args.command == "evaluate":
        evaluate(args.out, args.mcu, args.firmware_images)
    else:
        train(args.out, args.device, args.jobs, args.deadline, args.copy_to, args.extra)
    print(f"done in {time.time() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()
