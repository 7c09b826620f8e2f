"""The training section of BENCHMARKS.md (digits, Fashion-MNIST against backprop and
CwComp, memory, throughput, the ablation, score blocks), from the stored numbers only
(``benchmarks/results/train.json``)."""

from __future__ import annotations

from benchmarks.report import provenance_line

CWCOMP_FMNIST = 0.9231
GOAL_RATIO = 0.5  # forward-only peak / backprop peak the method aims for


def pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def render(res: dict) -> str:
    lines = ["## Training (`benchmarks/train_bench.py`)", "",
             "Each part below was measured on its own (`--only SECTION`) and names its own "
             "machine, date, commit and command.", ""]
    if "fashion_mnist" in res:
        f = res["fashion_mnist"]
        s = f["summary"]
        bp = f["backprop"]
        lines += ["### Fashion-MNIST (60k train incl. 10 % validation / 10k test)", "",
                  provenance_line(f.get("provenance")), "",
                  f"Command: `{f['command']}` (blocks {s['blocks']}, "
                  f"{s['epochs_per_block']} epochs per block, {s['params']:,} parameters "
                  f"= {s['params'] / 1e6:.2f} MB as int8).", "",
                  "| model | multipass | onepass | training time |", "|---|---|---|---|",
                  f"| ctxconv forward-only, block-wise | {pct(s['test_accuracy']['multipass'])} "
                  f"| {pct(s['test_accuracy']['onepass'])} | {s['train_seconds']:.0f} s |",
                  f"| same architecture, backprop end to end ({bp['epochs']} epochs) | "
                  f"{pct(bp['test_accuracy']['multipass'])} | {pct(bp['test_accuracy']['onepass'])}"
                  f" | {bp['train_seconds']:.0f} s |",
                  f"| CwComp (AAAI 2024, published) | {pct(CWCOMP_FMNIST)} | | |", "",
                  f"Gap to backprop: {100 * (bp['test_accuracy']['onepass'] - s['test_accuracy']['onepass']):.2f} points. "
                  f"Margin over CwComp: {100 * (s['test_accuracy']['onepass'] - CWCOMP_FMNIST):+.2f} points. "
                  "Training times are each run's own wall clock (not side by side; the "
                  "throughput table below is).", "",
                  ]  # fmt: skip
    if "score_blocks" in res:
        sb = res["score_blocks"]
        lines += [provenance_line(sb.get("provenance")), "",
                  "Which blocks' goodness is summed into the class scores (validation split, "
                  "the trained model above; `model.score_blocks`): "
                  + ", ".join(f"blocks {k} {pct(v)}" for k, v in sb["validation_accuracy"].items())
                  + f". Configured: {sb['configured']}.", ""]
    if "digits" in res:
        d = res["digits"]
        s = d["summary"]
        lines += ["### digits (the embedded default)", "", provenance_line(d.get("provenance")), "",
                  f"Command: `{d['command']}`: test accuracy multipass "
                  f"{pct(s['test_accuracy']['multipass'])}, onepass "
                  f"{pct(s['test_accuracy']['onepass'])}; {s['train_seconds']:.1f} s training, "
                  f"{d['wall_seconds']:.1f} s wall for the whole command "
                  f"(test split: {s['test_size']} images).", ""]
    if "memory" in res:
        m = res["memory"]
        mib = 2**20
        meas = m.get("measured")
        lines += ["### Peak training memory, forward-only vs backprop", "",
                  provenance_line(m.get("provenance")), "",
                  f"Fashion-MNIST model, batch {m['batch']}, Adam, one training step. Two "
                  "figures: **accounted** (bytes of weights + gradients + optimizer state + "
                  "activations autograd saves for backward + input batch, counted with "
                  "saved-tensor hooks; it leaves out gradient buffers of intermediates, outputs "
                  "that are not saved, the frozen prefix's activations and allocator scratch) "
                  "and, where present, **measured**"
                  + (f" ({meas['method']}; {meas['threads']} threads, median of "
                     f"{meas['repeats']} runs per variant, variants interleaved; "
                     "`benchmarks/memory_probe.py`)" if meas else "") + ".", "",
                  "| training | weights | grads | Adam state | saved activations | input "
                  "| accounted total | measured peak |",
                  "|---|---|---|---|---|---|---|---|"]  # fmt: skip

        def row(label: str, b: dict, variant: str) -> str:
            got = f"{meas['median_bytes'][variant] / mib:.2f} MiB" if meas else "not measured"
            return (f"| {label} | {b['weights'] / mib:.2f} MiB | {b['gradients'] / mib:.2f} MiB | "
                    f"{b['optimizer_state'] / mib:.2f} MiB | {b['saved_activations'] / mib:.2f} "
                    f"MiB | {b['input_batch'] / mib:.2f} MiB | {b['total'] / mib:.2f} MiB | {got} |")

        for i, b in enumerate(m["forward_only_per_block"]):
            lines.append(row(f"forward-only, block {i}", b, f"block{i}"))
        lines += [row("backprop, whole network", m["backprop"], "backprop"), ""]
        lines.append("Forward-only peak / backprop peak (a ratio; the largest block against the "
                     f"whole network): accounted **{m['ratio_forward_only_over_backprop']:.3f}**"
                     + (f", measured **{meas['ratio_forward_only_over_backprop']:.3f}**"
                        if meas else "") + ".")
        if meas:
            goal = m.get("goal_ratio", GOAL_RATIO)
            met = meas["ratio_forward_only_over_backprop"] <= goal
            lines += ["", f"Goal forward-only / backprop <= {goal}, judged on the measured "
                      f"ratio: **{'met' if met else 'not met'}** "
                      f"({meas['ratio_forward_only_over_backprop']:.3f}). Runs (MiB): "
                      + "; ".join(f"{v} " + ", ".join(f"{r / mib:.1f}" for r in rs)
                                  for v, rs in meas["runs_bytes"].items()) + "."]
        lines.append("")
    if "throughput" in res:
        t = res["throughput"]
        lines += ["### Training throughput on this CPU", "", provenance_line(t.get("provenance")),
                  "",
                  f"Fashion-MNIST model, batch {t['batch']}, one training step (forward, local "
                  f"loss, backward; frozen prefix included for forward-only), best of "
                  f"{t['repeats']} x {t['steps']} steps, all variants interleaved in one run.", "",
                  "| training step | images/s |", "|---|---|"]
        lines += [f"| {k} | {v:.0f} |" for k, v in t["images_per_second"].items()]
        lines += ["", "An epoch of every block forward-only costs "
                  f"{t['all_blocks_forward_only_over_backprop_time']:.2f}x the time of one "
                  "backprop epoch (each block trains on the whole set once per epoch).", ""]
    if "ablation" in res:
        a = res["ablation"]
        lines += ["### Ablation (validation split)", "", provenance_line(a.get("provenance")), "",
                  f"Fashion-MNIST, first {a['train_samples']} training images, blocks "
                  f"{a['blocks']}, {a['epochs_per_block']} epochs per block, Adam 2e-3; "
                  "validation accuracy (the test split is not read).", "",
                  "| variant | multipass | onepass | seconds |", "|---|---|---|---|"]
        for r in a["rows"]:
            acc = r["val_accuracy"]
            one = pct(acc["onepass"]) if "onepass" in acc else "n/a (context in conv)"
            lines.append(f"| {r['name']} | {pct(acc['multipass'])} | {one} | {r['seconds']} |")
        lines.append("")
    return "\n".join(lines)
