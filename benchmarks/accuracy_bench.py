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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from run_pool import T0, Pool, Run, machine_info, overridden, summary  # noqa: E402
from run_pool import mean_std as _mean_std  # noqa: E402
from run_pool import sh as _sh  # noqa: E402

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


def side_by_side_runs(extra: list[str]) -> list[Run]:
    """Every candidate (validation only) and the schedule comparison (test read once), three
    seeds each, in ``START_ORDER`` (a candidate's seeds together)."""
    plan = {name: (group, ov, False) for group, cands in CANDIDATES.items()
            for name, ov in cands.items()}
    plan.update({name: ("schedules", ov, True) for name, ov in SCHEDULES.items()})
    return [Run(f"{name}_seed{s}", plan[name][0], overridden([], [*plan[name][1], *extra]), seed=s,
                test=plan[name][2]) for name in START_ORDER for s in SEEDS]


def timed_runs(extra: list[str]) -> list[Run]:
    return [Run(f"timed_{name}", "timed", overridden([], [*overrides, *extra]), test=False,
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
        entry["export_rc"], entry["export_seconds"] = _sh(
            ["ctxconv-export", str(run), "--int8"], run / "export.log")
        if entry["export_rc"] != 0:
            entry["error"] = (run / "export.log").read_text().strip().splitlines()[-1:]
            done[run.name] = entry
            continue
        manifest = json.loads((run / "export" / "manifest.json").read_text())
        entry["int8_weight_bytes"] = sum(b["params"] for b in manifest["blocks"])
        entry["manifest_accuracy"] = manifest.get("accuracy")
        sim = run / f"sim_{mcu}.json"
        entry["sim_rc"], entry["sim_seconds"] = _sh(
            ["ctxconv-sim", str(run / "export"), "--mcu", mcu, "--json", str(sim),
             "--no-tflm-arena", "--bit-exact-images", "200"], run / "sim.log")
        entry["sim"] = json.loads(sim.read_text()) if entry["sim_rc"] in (0, 4) else None
        if s == SEEDS[0]:
            fw = run / f"firmware_{mcu}.json"
            entry["firmware_rc"], entry["firmware_seconds"] = _sh(
                ["ctxconv-sim", str(run / "export"), "--mcu", mcu, "--backend", "firmware",
                 "--images", str(firmware_images), "--emulated-images", "2", "--json",
                 str(fw), "--no-tflm-arena"], run / "firmware.log")
            entry["firmware"] = json.loads(fw.read_text()) if fw.is_file() else None
        done[run.name] = entry
        (out / "evaluated.json").write_text(json.dumps(done, indent=1))
        print(f"{run.name}: export rc {entry['export_rc']}, sim rc {entry['sim_rc']}",
              flush=True)
    return done


#: what each candidate's short name stands for (the table says it in words)
WHAT = {"deep4": "4 blocks 64-96-192-256 (pools 1-1-2-2)",
        "deep5": "5 blocks 64-64-128-128-256 (pools 1-1-2-1-2)",
        "wide3": "3 blocks 96-192-256 (pools 1-2-2)"}
TARGET = 0.94
TRAIN_COMMIT = "f2def22"  # the device ran this commit's tree; its copy's git metadata was stale
EVALUATE_COMMIT = "6e05258"  # the export and simulator code the evaluation ran


def _pm(values: list[float]) -> str:
    m, sd = _mean_std(values)
    return f"{100 * m:.2f} ± {100 * sd:.2f}"


def _acc(run: dict, split: str) -> float | None:
    acc = (run.get("summary") or {}).get(f"{split}_accuracy")
    return None if acc is None else acc["multipass"]


def _seeds(runs: dict, name: str, split: str) -> list[float]:
    vals = [_acc(runs[f"{name}_seed{s}"], split) for s in SEEDS if f"{name}_seed{s}" in runs]
    return [v for v in vals if v is not None]


def _describe(name: str, overrides: list[str]) -> str:
    arch = WHAT.get(name.split("_")[0], name)
    sched = "simultaneous" if any(o == SIM[0] for o in overrides) else (
        "backprop" if any(o == BP[0] for o in overrides) else "sequential")
    epochs = next(o.split("=")[1] for o in overrides if o.startswith("trainer.epochs="))
    extra = ", label smoothing 0.1" if "trainer.label_smoothing=0.1" in overrides else ""
    return f"{arch}, {sched}, {epochs} epochs{extra}"


def _epoch_of_all_blocks(run: dict) -> float:
    """Seconds of one epoch of every block: per block the mean of its epochs, summed."""
    per_block: dict[int, list[float]] = {}
    for block, _, secs, _ in run["epochs"]:
        per_block.setdefault(block, []).append(secs)
    return sum(sum(v) / len(v) for v in per_block.values())


def render(res: dict) -> list[str]:
    """The markdown of the accuracy section, from the stored numbers only."""
    import report

    tr, ev = res["train"], res["evaluated"]
    side, timed = tr["phases"]["side_by_side"], tr["phases"]["timed"]
    chosen = tr["selected"]
    lines = ["## Forward-only accuracy: recipe search, schedules, backprop at the same budget "
             "(`benchmarks/accuracy_bench.py`)", "",
             report.provenance_line(tr["provenance"]), "",
             report.provenance_line(res["provenance"]), "",
             "Fashion-MNIST, 54k training / 6k validation / 10k test images. Every model: "
             "blocks of max-pool, 3x3 conv with batch norm and ReLU, each with a local linear "
             "head on its output average-pooled to at most 7x7 cells; the class scores are the "
             "last block's head. Forward-only: each block learns from its own head's "
             "cross-entropy, no gradient crosses a block (*sequential*: one block after "
             "another, the earlier ones frozen; *simultaneous*: every block on every batch, "
             "its input detached). Backprop: the same network, one cross-entropy on the last "
             "block's scores, gradients through every block. Every candidate: Adam, cosine "
             "schedule, batch 256 at lr 2.8e-3, random shifts of up to 2 pixels and "
             "horizontal flips. These candidates were added after the test readings of the "
             "contextual section's models (a)-(h); within this benchmark every choice is "
             "made on the validation split and the test split is read once per final.", "",
             "### Candidates, validation split, 3 seeds (side by side on the GPU)", "",
             "| candidate | what it trains | validation % | per seed |", "|---|---|---|---|"]
    for group, cands in tr["candidates"].items():
        for name, overrides in cands.items():
            vals = _seeds(side, name, "val")
            mark = " (chosen)" if chosen.get(group) == name else ""
            per = ", ".join(f"{100 * v:.2f}" for v in vals)
            score = _pm(vals) if len(vals) == len(SEEDS) else f"{len(vals)} of 3 seeds"
            lines.append(f"| `{name}`{mark} | {_describe(name, overrides)} | {score} | {per} |")
    lines += ["", "### Finals: the chosen forward-only candidate, its test split read once", ""]
    fo = [tr["finals"][f"final_fo_seed{s}"] for s in SEEDS if f"final_fo_seed{s}" in tr["finals"]]
    float_test = [a for r in fo if (a := _acc(r, "test")) is not None]
    evals = [ev[f"final_fo_seed{s}"] for s in SEEDS if f"final_fo_seed{s}" in ev]
    int8 = [e["sim"]["accuracy"] for e in evals if e.get("sim")]
    lines += ["| model | float test % (per seed) | float mean ± std | int8 test % (simulator, "
              "every test image) | int8 weights |", "|---|---|---|---|---|"]
    weights = evals[0]["int8_weight_bytes"] if evals else None
    lines.append(f"| `{chosen.get('fo')}` | {', '.join(f'{100 * v:.2f}' for v in float_test)} | "
                 f"{_pm(float_test)} | {_pm(int8) if int8 else 'not measured'} | "
                 f"{weights / 1024:.0f} KiB |" if weights else "| (no export) |")
    if float_test:
        m, _ = _mean_std(float_test)
        verdict = "met" if m >= TARGET else "missed"
        lines += ["", f"Target >= {100 * TARGET:.1f} % mean test accuracy over 3 seeds: "
                  f"**{verdict}** ({100 * m:.2f} %)."]
        if int8 and len(int8) == len(float_test):
            gap = max(abs(a - b) for a, b in zip(float_test, int8, strict=True))
            lines.append(f"int8 within 0.1 points of float on every seed: "
                         f"**{'yes' if gap <= 0.001 else 'no'}** (largest gap "
                         f"{100 * gap:.2f} points).")
    if evals and evals[0].get("sim"):
        lines += _fit_lines(evals[0]["sim"], evals[0].get("firmware"))
    bp_name = chosen.get("bp")
    if bp_name:
        bp_test = [a for s in SEEDS if (a := _acc(tr["finals"].get(f"final_bp_seed{s}", {}),
                                                    "test")) is not None]
        val_bp, val_fo = _seeds(side, bp_name, "val"), _seeds(side, chosen.get("fo", ""), "val")
        lines += ["", f"Backprop at the same budget (`{bp_name}`, the best backprop candidate "
                  f"on validation): validation {_pm(val_bp)} % against forward-only's "
                  f"{_pm(val_fo)} %."]
        lines.append(f"Its test split: {_pm(bp_test)} %." if len(bp_test) == len(SEEDS) else
                     "Its test split was not read: the reads were stopped at the command's "
                     "time limit, so the comparison stands on the validation split only.")
    lines += _schedule_lines(side) + _timing_lines(timed, tr["machine"])
    return lines


def _fit_lines(sim: dict, fw: dict | None) -> list[str]:
    """The MCU verdict: the simulator's plan against the profile, and where the firmware
    backend ran, RAM and flash read from the binary."""
    prof = sim["profile"]
    text = (f"On the {sim['mcu']} ({prof['sram_bytes'] // 1024} KiB SRAM, "
            f"{prof['flash_bytes'] // 1024} KiB flash), the simulator's plan: "
            f"**{'fits' if sim['fits'] else 'does not fit'}** (SRAM "
            f"{sim['sram_bytes'] / 1024:.1f} of {sim['sram_limit_bytes'] / 1024:.1f} KiB, flash "
            f"{sim['flash_bytes'] / 1024:.1f} of {sim['flash_limit_bytes'] / 1024:.1f} KiB "
            "available beside the profile's allowance for the runtime and application code)")
    if sim["problems"]:
        text += ": " + "; ".join(sim["problems"])
    emu = ((fw or {}).get("firmware") or {}).get("emulated")
    if emu:
        binary_fits = (emu["ram_bytes"] <= prof["sram_bytes"]
                       and emu["flash_bytes"] <= prof["flash_bytes"])
        text += (f". The firmware binary of the generated C (library, weights and the test "
                 f"application, built for the {sim['mcu']}'s core): "
                 f"**{'fits' if binary_fits else 'does not fit'}**, RAM "
                 f"{emu['ram_bytes'] / 1024:.1f} KiB (static + painted stack + I/O buffers) "
                 f"and flash {emu['flash_bytes'] / 1024:.1f} KiB, read from the binary; "
                 f"{fw['images']} test images through it at {100 * fw['accuracy']:.2f} %")
    return ["", text + "."]


def _schedule_lines(side: dict) -> list[str]:
    lines = ["", "### Sequential against simultaneous, the default model", "",
             "`experiment=fashion_mnist` (3 blocks 64-128-256, 6 epochs, batch 128, no "
             "augmentation), 3 seeds each, side by side, test read once per run (fixed "
             "settings, nothing chosen):", "",
             "| schedule | test % | per seed | validation % | training s per run |",
             "|---|---|---|---|---|"]
    means = {}
    for name in SCHEDULES:
        test, val = _seeds(side, name, "test"), _seeds(side, name, "val")
        secs = [side[f"{name}_seed{s}"]["summary"]["train_seconds"] for s in SEEDS]
        means[name] = _mean_std(test)
        lines.append(f"| {name.removeprefix('default_')} | {_pm(test)} | "
                     f"{', '.join(f'{100 * v:.2f}' for v in test)} | {_pm(val)} | "
                     f"{sum(secs) / len(secs):.1f} |")
    (ms, ss), (mq, sq) = means["default_simultaneous"], means["default_sequential"]
    se = (ss ** 2 / len(SEEDS) + sq ** 2 / len(SEEDS)) ** 0.5  # of the difference of means
    z = (ms - mq) / se if se else 0.0
    level = "level with" if abs(z) < 2 else ("below" if z < 0 else "above")
    lines += ["", f"Simultaneous minus sequential: {100 * (ms - mq):+.2f} points, "
              f"{abs(z):.1f} standard errors of the difference: simultaneous is **{level}** "
              "sequential at the same epochs, with one pass over the data for all blocks "
              "where the sequential schedule makes one per block."]
    return lines


def _timing_lines(timed: dict, machine: dict) -> list[str]:
    lines = ["", f"### Training time, each run alone on the machine ({machine.get('gpu')})", "",
             "The default model, 6 epochs, data on the GPU; seconds from `metrics.jsonl` "
             "(validation excluded), the wall time of the whole command (start-up, data "
             "loading and evaluation included):", "",
             "| schedule | one epoch of every block, s | vs a backprop epoch | training s | "
             "wall s | validation % |", "|---|---|---|---|---|---|"]
    bp = _epoch_of_all_blocks(timed["timed_backprop"])
    ratios = {}
    for name in TIMED:
        run = timed[f"timed_{name}"]
        epoch = _epoch_of_all_blocks(run)
        ratios[name] = epoch / bp
        lines.append(f"| {name} | {epoch:.2f} | {epoch / bp:.2f}x | "
                     f"{run['summary']['train_seconds']:.1f} | {run['wall_seconds']:.1f} | "
                     f"{100 * _acc(run, 'val'):.2f} |")
    best = min((n for n in TIMED if n != "backprop"), key=ratios.__getitem__)
    seq_train = timed["timed_sequential"]["summary"]["train_seconds"]
    lines += ["", f"Target one epoch of every block <= 1.0x a backprop epoch on the GPU: "
              f"**{'met' if ratios[best] <= 1.0 else 'missed'}** (best: {best}, "
              f"{ratios[best]:.2f}x). Target <= 10 s of training for the benchmark model: "
              f"sequential **{'met' if seq_train <= 10 else 'missed'}** ({seq_train:.1f} s); "
              "the simultaneous schedule's time is in the table, its accuracy in the "
              "comparison above."]
    return lines


def store(out: Path, train_results: Path) -> None:
    """The section's JSON (the device's training record, this machine's evaluation) and
    markdown."""
    import report

    tr = json.loads(train_results.read_text())
    side = tr["phases"]["side_by_side"]
    for group, cands in CANDIDATES.items():  # a group the deadline stopped before its reads
        means = {n: sum(v) / len(v) for n in cands if len(v := _seeds(side, n, "val")) == 3}
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
           "provenance": {**report.provenance(), "commit": EVALUATE_COMMIT,
                          "command": "python benchmarks/"
                          "accuracy_bench.py evaluate --out DIR", "note": "int8 export and "
                          "simulator of the forward-only finals on this machine"}}
    report.write_section("accuracy", res, render(res))


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
        import report

        report.render_section("accuracy", render)
    elif args.command == "store":
        store(args.out, args.train_results)
    elif args.command == "evaluate":
        evaluate(args.out, args.mcu, args.firmware_images)
    else:
        train(args.out, args.device, args.jobs, args.deadline, args.copy_to, args.extra)
    print(f"done in {time.time() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()
