"""The accuracy section of BENCHMARKS.md (the recipe search, the finals, sequential against
simultaneous, training time), from the stored numbers only
(``benchmarks/results/accuracy.json``)."""

from __future__ import annotations

from benchmarks.accuracy_plan import SCHEDULES, SEEDS, TIMED
from benchmarks.report import provenance_line
from benchmarks.runner import mean_std

#: what each candidate's short name stands for (the table says it in words)
WHAT = {"deep4": "4 blocks 64-96-192-256 (pools 1-1-2-2)",
        "deep5": "5 blocks 64-64-128-128-256 (pools 1-1-2-1-2)",
        "wide3": "3 blocks 96-192-256 (pools 1-2-2)"}
TARGET = 0.94


def _pm(values: list[float]) -> str:
    m, sd = mean_std(values)
    return f"{100 * m:.2f} ± {100 * sd:.2f}"


def _acc(run: dict, split: str) -> float | None:
    acc = (run.get("summary") or {}).get(f"{split}_accuracy")
    return None if acc is None else acc["multipass"]


def seed_values(runs: dict, name: str, split: str) -> list[float]:
    vals = [_acc(runs[f"{name}_seed{s}"], split) for s in SEEDS if f"{name}_seed{s}" in runs]
    return [v for v in vals if v is not None]


def _describe(name: str, overrides: list[str]) -> str:
    arch = WHAT.get(name.split("_")[0], name)
    sched = "simultaneous" if "trainer.schedule=simultaneous" in overrides else (
        "backprop" if "trainer.method=backprop" in overrides else "sequential")
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
    tr, ev = res["train"], res["evaluated"]
    side, timed = tr["phases"]["side_by_side"], tr["phases"]["timed"]
    chosen = tr["selected"]
    lines = ["## Forward-only accuracy: recipe search, schedules, backprop at the same budget "
             "(`benchmarks/accuracy_bench.py`)", "",
             provenance_line(tr["provenance"]), "",
             provenance_line(res["provenance"]), "",
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
            vals = seed_values(side, name, "val")
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
        m, _ = mean_std(float_test)
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
        val_bp, val_fo = seed_values(side, bp_name, "val"), seed_values(side, chosen.get("fo", ""), "val")
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
        test, val = seed_values(side, name, "test"), seed_values(side, name, "val")
        secs = [side[f"{name}_seed{s}"]["summary"]["train_seconds"] for s in SEEDS]
        means[name] = mean_std(test)
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
