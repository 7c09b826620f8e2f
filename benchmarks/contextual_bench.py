"""Contextual Convolutions at full scale: writes the "Contextual convolutions" section.

    python benchmarks/contextual_bench.py train --out DIR      # all training (a GPU: ~10 min)
    python benchmarks/contextual_bench.py train --candidates fgh --out DIR  # (GPU: ~8 min)
    python benchmarks/contextual_bench.py select --groups fgh --out DIR  # test the chosen
    python benchmarks/contextual_bench.py evaluate --out DIR   # int8 export + simulator (CPU)
    python benchmarks/contextual_bench.py render --out DIR     # BENCHMARKS.md section

Fashion-MNIST (54k train / 6k validation / 10k test), 3 seeds per model:

- (a) the default local-head model (``experiment=fashion_mnist``);
- (b) the best contextual model: the context in the conv of the blocks chosen on the
  validation split, trained on ``generate_data`` pairs (``experiment=contextual/contrast``);
- (c) the official method's configuration: the context into the first block's conv,
  energy goodness, BCE on positive/negative pairs, per-sample L2 normalisation
  (``experiment=contextual/official``);
- (d) backprop on the architecture of (a) (``experiment=fashion_mnist_backprop``);
- (e) the best contextual model within 2x the context-free multipass MACs;
- (f) the official code's whole structure (its classifier put back as block 2's head,
  ``experiment=contextual/official_classifier``);
- (g) (a) trained longer, with augmentation and widths chosen on validation;
- (h) backprop at (g)'s budget.

The candidates of (f), (g) and (h) are named experiments too (``contextual/f_bce`` ...);
``contextual_plan`` holds the plan, ``contextual_render`` the section's prose.

``train`` runs every ``ctxconv-train`` as a subprocess: first, alone on the machine, the
timed runs of the host-training benchmark (the default with and without the prefix cache,
in bf16, and backprop); then, side by side, the ablations (2 epochs per block, validation
only) and seeds 1-2 of (a) and (d); the finals of (b) and (c) start as soon as their
ablation group has chosen. ``--candidates`` trains the candidates of (f), (g) and (h) at every
seed on validation only; ``select`` makes the best mean the group's finals and reads their
test split once. Every run keeps its command; the test split is read once per final run and
never by an ablation or a candidate.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a path: the repository

from benchmarks import contextual_plan as plan
from benchmarks import runner
from benchmarks.contextual_render import render, render_gpu
from benchmarks.provenance import ROOT, machine_info, provenance
from benchmarks.report import render_section, write_section
from benchmarks.runner import T0, Pool, experiment_settings, sh, summary

TRAIN_COMMIT = "39aafc8"  # the commit the device trained at (results.json has no git)


def train(out: Path, device: str, jobs: int, deadline: float, extra: list[str]) -> dict:
    """Every run of the plan; writes ``out/results.json`` as runs end."""
    out.mkdir(parents=True, exist_ok=True)
    pool = Pool(out, device, extra, jobs, T0 + deadline)
    results = {"machine": machine_info(), "device": device, "extra_overrides": extra,
               "selected": {}, "runs": {}}

    def save() -> None:
        results["runs"] = pool.record()
        (out / "results.json").write_text(json.dumps(results, indent=1))

    for run in plan.exclusive_runs():  # one at a time: their wall times are the measurement
        pool.run_alone(run)
        save()
    ablations = plan.ablation_runs()
    pool.queue = ablations + plan.seed_runs()
    pending = {"b": [r for r in ablations if r.group == "ablation_b"],
               "c": [r for r in ablations if r.group == "ablation_c"],
               "e": plan.within_budget(ablations)}

    def start_finals() -> None:
        for group, runs in list(pending.items()):
            if all(r in pool.done for r in runs):
                chosen = plan.choose(out, runs)
                del pending[group]
                if chosen is not None:
                    results["selected"][group] = chosen.name
                    pool.queue[:0] = plan.finals(group, chosen)  # ahead of everything else
                    pool.poll()
        save()

    pool.drain(tick=1.0, after_poll=start_finals)
    save()
    return results


def train_candidates(out: Path, device: str, groups: str, deadline: float, jobs: int,
                     extra: list[str]) -> dict:
    """Every candidate of ``groups`` at every seed, side by side, validation only."""
    runs = plan.candidate_runs(groups)
    if not runs:
        names = ", ".join(n for c in plan.CANDIDATES.values() for n in c)
        raise SystemExit(f"no candidates in {groups!r}: name groups "
                         f"({''.join(plan.CANDIDATES)}) or candidates ({names})")
    tag = "candidates" if plan.candidate_groups(groups) else f"candidates_{groups}"
    return runner.side_by_side(out, device, tag, runs, deadline, extra, jobs=jobs,
                               tar_by="run", selected={}, label="Candidates at the full "
                               "epochs, every seed, validation only, side by side")


def train_finals(out: Path, device: str, group: str, ablation: str, deadline: float,
                 extra: list[str]) -> dict:
    """Three seeds of one named ablation setting, side by side, as group ``group``."""
    chosen = next(r for r in plan.ablation_runs() if r.name == ablation)
    return runner.side_by_side(out, device, group, plan.finals(group, chosen), deadline,
                               extra, selected={group: ablation})


def train_named(out: Path, device: str, names: list[str], deadline: float,
                extra: list[str]) -> dict:
    """Named runs of the plan (ablations), side by side, as ``results_<first name>.json``."""
    named = {r.name: r for r in plan.ablation_runs()}
    unknown = [n for n in names if n not in named]
    if unknown:
        raise SystemExit(f"unknown run(s) {unknown}; the plan has {sorted(named)}")
    return runner.side_by_side(out, device, names[0], [named[n] for n in names], deadline,
                               extra, selected={})


def select(out: Path, groups: str, device: str) -> dict:
    """Per group, the candidate with the best mean validation accuracy over the seeds makes
    the finals: its run folders are copied to ``<group>_seed<s>`` and each reads the test split
    once (``resume=true evaluate_test=true``: no training). Writes ``results_select.json``."""
    trained = json.loads((out / "results_candidates.json").read_text())
    path = out / "results_select.json"
    results = {"selected": {}, "candidates": {}, "runs": {},
               **(json.loads(path.read_text()) if path.exists() else {}),  # other groups kept
               "machine": machine_info(), "provenance": provenance(),
               "device": trained["device"], "extra_overrides": [],
               "label": "The best candidate of each group, its test split read once (no "
                        "training)"}
    for group in groups:
        vals = plan.candidate_val_accuracies(out, group)
        if not vals:
            print(f"({group}): no candidate has all {len(plan.SEEDS)} seeds trained", flush=True)
            continue
        chosen = plan.best_candidate(vals)
        results["candidates"][group] = vals
        results["selected"][group] = f"cand_{chosen}"
        for seed in plan.SEEDS:
            src, name = out / "runs" / f"cand_{chosen}_seed{seed}", f"{group}_seed{seed}"
            rc, secs = sh(runner.copy_to_read_test(src, out / "runs" / name, device),
                          out / "runs" / name / "test.log")
            results["runs"][name] = {"group": group, "seed": seed,
                                     "experiment": f"contextual/{chosen}", "overrides": [],
                                     "returncode": rc, "test_seconds": secs,
                                     "selected_from": src.name, "summary": summary(out, name)}
            print(f"{name} = {src.name}: test read, rc {rc}", flush=True)
    path.write_text(json.dumps(results, indent=1))
    return results


def evaluate(out: Path, groups: str, mcu: str = "nrf52840", reuse: bool = False,
             images: int | None = None, seeds: tuple[int, ...] = plan.SEEDS) -> dict:
    """int8 export and the simulator on ``mcu`` for every final run; ``out/evaluated.json``.

    ``reuse``: keep an existing export of the run (its manifest present) instead of
    exporting again."""
    path = out / "evaluated.json"
    done: dict = {}
    for group in groups:
        for seed in seeds:
            run_dir = out / "runs" / f"{group}_seed{seed}"
            if not (run_dir / "summary.json").exists():
                continue
            entry = runner.export_and_simulate(run_dir, mcu, reuse, images)
            done = {**(json.loads(path.read_text()) if path.exists() else {}),
                    f"{group}_seed{seed}": entry}  # other stages may run beside this one
            path.write_text(json.dumps(done, indent=1))
            print(f"{group}_seed{seed}: export rc {entry['export_rc']} in "
                  f"{entry['export_seconds']}s", flush=True)
    return done


def summarize(out: Path) -> dict:
    """benchmarks/results/contextual.json and host_train_gpu.json from a train + evaluate."""
    results = json.loads((out / "results.json").read_text())
    evaluated = json.loads((out / "evaluated.json").read_text()) \
        if (out / "evaluated.json").exists() else {}
    runs = {name: {**run, "device": results["device"]} for name, run in results["runs"].items()}
    machine = f"{results['machine'].get('gpu', 'no GPU')}, {results['machine']['cpus']} cores"
    train_cmd = ("python benchmarks/contextual_bench.py train --device cuda --jobs 14 "
                 "--deadline 495 --bundle")
    later = []  # runs trained later, elsewhere: each file has its own provenance
    candidates: dict[str, dict[str, list[float]]] = {}
    superseded: dict[str, dict] = {}  # finals replaced by a later, better-on-validation candidate
    for path in sorted(out.glob("results_*.json")):
        extra = json.loads(path.read_text())
        if "provenance" not in extra:
            continue
        finished = sorted(n for n, r in extra["runs"].items() if r.get("summary"))
        later.append({**extra["provenance"], "runs": finished,
                      "label": extra.get("label", "Trained later, side by side")})
        candidates.update(extra.get("candidates", {}))
        superseded.update(extra.get("superseded", {}))
        runs.update({name: {**run, "device": extra["device"]}
                     for name, run in extra["runs"].items()})
        results["selected"].update(extra["selected"])
    groups = {}
    for group in plan.GROUPS:
        seeds = {}
        for seed in plan.SEEDS:
            name = f"{group}_seed{seed}"
            run = runs.get(name)
            if not run or not run.get("summary"):
                continue
            summ, ev = run["summary"], evaluated.get(name, {})
            row = {"float_test": summ["test_accuracy"], "float_val": summ["val_accuracy"],
                   "params": summ["params"], "train_seconds": summ["train_seconds"],
                   "command": runner.train_command(run, f"seed={seed}",
                                            f"trainer.device={run['device']}")}
            row.update(runner.evaluation(out / "runs" / name, ev))
            full = out / "runs" / name / "full_sim_nrf52840_multipass.json"
            if full.exists():  # a whole-split simulator run kept beside a subset one
                whole = json.loads(full.read_text())
                row["full_split_int8"] = {"accuracy": whole["accuracy"],
                                          "images": whole["images"]}
            sim = row.get("sim_multipass")
            if sim and sim["images"] < plan.TEST_IMAGES:
                row["float_on_sim_images"] = runner.float_on_first(out / "runs" / name,
                                                                   sim["images"])
            seeds[str(seed)] = row
        groups[group] = {"label": plan.LABELS[group], "seeds": seeds}
    grouping = {r.name: r.group for r in plan.ablation_runs()}  # the plan's, as it is now
    ablation = [{"name": n, "group": grouping.get(n, r["group"]),
                 "overrides": experiment_settings(r.get("experiment", runner.DEFAULT_EXPERIMENT),
                                                  r["overrides"]),
                 "val": r["summary"]["val_accuracy"]["multipass"],
                 "train_seconds": r["summary"]["train_seconds"]}
                for n, r in runs.items() if r["group"].startswith("ablation") and r.get("summary")]
    res = {"provenance": {"machine": machine, "date": "2026-11-28", "commit": TRAIN_COMMIT,
                          "command": train_cmd,
                          "note": "training on the GPU machine; int8 export and simulator "
                                  "afterwards on this machine"},
           "evaluation_provenance": provenance(
               "python benchmarks/contextual_bench.py evaluate && "
               "python benchmarks/contextual_bench.py summarize"),
           "side_by_side_provenance": later,
           "groups": groups, "ablation": ablation, "selected": results["selected"],
           "ablation_epochs": plan.ABLATION_EPOCHS,
           "candidates": {g: {n: {"val": v, "overrides": experiment_settings(f"contextual/{n}")}
                              for n, v in c.items()} for g, c in candidates.items()},
           "superseded": {g: {"candidate": s["candidate"], "why": s["why"],
                              "test": [r["test_accuracy"]["multipass"]
                                       for r in s["runs"].values()]}
                          for g, s in superseded.items()}}
    timing = {name: runner.timed_record(runs[name], runner.metrics(out, name))
              for name in ("a_seed0", "a_seed0_nocache", "a_seed0_bf16", "d_seed0")}
    gpu = {"provenance": {**res["provenance"], "note": "each run alone on the machine"},
           "machine": results["machine"], "runs": timing}
    write_section("contextual", res, render(res))
    write_section("host_train_gpu", gpu, render_gpu(gpu))
    return res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=["train", "select", "evaluate", "summarize", "render"])
    parser.add_argument("--out", type=Path,
                        default=ROOT / "benchmarks" / "runs" / "contextual")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--jobs", type=int, default=14)
    parser.add_argument("--deadline", type=float, default=560.0, help="seconds for train")
    parser.add_argument("--extra", nargs="*", default=[], help="overrides added to every run")
    parser.add_argument("--bundle", action="store_true", help="tar the finals after train")
    parser.add_argument("--groups", default=plan.GROUPS, help="evaluate: which model groups")
    parser.add_argument("--sim-images", type=int, default=None,
                        help="evaluate: simulate the first N test images (default all)")
    parser.add_argument("--seeds", default=",".join(map(str, plan.SEEDS)),
                        help="evaluate: which seeds (one process per seed can run side by side)")
    parser.add_argument("--reuse-export", action="store_true",
                        help="evaluate: keep a run's existing export")
    parser.add_argument("--finals", metavar="GROUP=ABLATION",
                        help="train: only three seeds of one ablation setting, as GROUP")
    parser.add_argument("--candidates", metavar="GROUPS",
                        help="train: every candidate of these groups at every seed")
    parser.add_argument("--runs", metavar="NAME,...",
                        help="train: only these runs of the plan, side by side")
    args = parser.parse_args()
    if args.stage == "train" and args.finals:
        group, ablation = args.finals.split("=", 1)
        train_finals(args.out, args.device, group, ablation, args.deadline, args.extra)
    elif args.stage == "train" and args.candidates:
        train_candidates(args.out, args.device, args.candidates, args.deadline, args.jobs,
                         args.extra)
    elif args.stage == "train" and args.runs:
        train_named(args.out, args.device, args.runs.split(","), args.deadline, args.extra)
    elif args.stage == "train":
        train(args.out, args.device, args.jobs, args.deadline, args.extra)
        if args.bundle:
            runner.bundle(args.out, plan.GROUPS, plan.SEEDS)
    elif args.stage == "select":
        select(args.out, args.groups, args.device)
    elif args.stage == "evaluate":
        evaluate(args.out, args.groups, reuse=args.reuse_export, images=args.sim_images,
                 seeds=tuple(int(v) for v in args.seeds.split(",")))
    elif args.stage == "summarize":
        summarize(args.out)
    else:
        render_section("contextual", render)
        render_section("host_train_gpu", render_gpu)


if __name__ == "__main__":
    main()
