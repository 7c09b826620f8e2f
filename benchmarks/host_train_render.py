"""The host-training section of BENCHMARKS.md (throughput, an epoch, torchrun, threads),
from the stored numbers only (``benchmarks/results/host_train.json``)."""

from __future__ import annotations

from benchmarks.report import provenance_line


def render(res: dict) -> list[str]:
    lines = ["## Host training: cache, devices, processes (`benchmarks/host_train_bench.py`)", "",
             "Each part names its own machine, date, commit and command, and the load the "
             "machine carried when it was measured (a shared machine's single numbers carry "
             "that noise; ratios measured side by side hold better). "
             "This section is measured on the CPU; the GPU numbers (the same model on an "
             "NVIDIA H200) are in the next section, \"Host training on a GPU\".", ""]
    if "throughput" in res:
        t = res["throughput"]
        lines += ["### Training throughput per block, with and without the frozen-prefix cache", "",
                  provenance_line(t.get("provenance")), "",
                  f"Fashion-MNIST model (`experiment=fashion_mnist`), real training images, batch "
                  f"{t['batch']}, {t['batches']} batches per variant, best of {t['repeats']}, "
                  f"all variants interleaved, {t['threads']} thread(s). Measured on these batches;"
                  " the epoch ratios below are accounted from them (seconds per image summed "
                  "over blocks).", "",
                  "| training step | images/s |", "|---|---|"]
        lines += [f"| {k} | {v:.0f} |" for k, v in t["images_per_second"].items()]
        lines += ["", "An epoch of every block, forward-only, over one backprop epoch: "
                  f"**{t['ratio_cache']:.2f}x with the cache** (cache build excluded), "
                  f"{t['ratio_cache_with_build']:.2f}x with the cache build spread over "
                  f"{t['epochs_per_block']} epochs per block, {t['ratio_no_cache']:.2f}x without "
                  "the cache (the prefix recomputed every step).", ""]
    if "epoch" in res:
        e = res["epoch"]
        lines += ["### Full training set, epoch by epoch (measured)", "",
                  provenance_line(e.get("provenance")), "",
                  f"`ctxconv-train experiment=fashion_mnist trainer.epochs={e['epochs']} "
                  f"trainer.cache_prefix=on|off` ({e['train_size']} training images, "
                  f"{e['threads']} thread(s)); seconds per block from `metrics.jsonl`: the first "
                  "epoch of a block includes building its cache, the last is a steady epoch. "
                  "Beside it one backprop epoch of the same network (`train_backprop`).", "",
                  "| training | first epoch, per block (s) | last epoch, per block (s) | "
                  "images/s per block (last epoch) | last epoch, all blocks / backprop epoch |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for mode in ("on", "off"):
            r = e[mode]
            lines.append(f"| forward-only, cache_prefix={mode} | "
                         f"{', '.join(f'{s:.1f}' for s in r['first_epoch_seconds'])} | "
                         f"{', '.join(f'{s:.1f}' for s in r['later_epoch_seconds'])} | "
                         f"{', '.join(f'{v:.0f}' for v in r['images_per_second'])} | "
                         f"**{r['later_epoch_over_backprop']:.2f}x** |")
        if "simultaneous" in e:
            r = e["simultaneous"]
            lines.append(f"| forward-only, trainer.schedule=simultaneous (all blocks each "
                         f"epoch) | {r['epoch_seconds'][0]:.1f} | {r['epoch_seconds'][-1]:.1f} | "
                         f"{r['images_per_second']:.0f} | "
                         f"**{r['later_epoch_over_backprop']:.2f}x** |")
        bp = e["backprop"]
        lines += [f"| backprop, whole network (one epoch) | {bp['train_seconds']:.1f} | | "
                  f"{bp['images_per_second']:.0f} | 1.00x |", "",
                  "Cache: " + "; ".join(f"block {b}: {why}" for b, why in
                                        e["on"]["prefix_cache"].items()) + ". "
                  f"Validation accuracy after {e['epochs']} epochs per block: cache "
                  f"{100 * e['on']['val_accuracy']['onepass']:.2f} %, no cache "
                  f"{100 * e['off']['val_accuracy']['onepass']:.2f} %.", ""]
    if "torchrun" in res:
        r = res["torchrun"]
        lines += ["### torchrun data-parallel on the CPU (gloo)", "",
                  provenance_line(r.get("provenance")), "",
                  f"Fashion-MNIST model, first {r['samples']} training images, one epoch per "
                  "block, one thread per process.", "",
                  "| run | training seconds | wall seconds | test accuracy (onepass) |",
                  "|---|---|---|---|"]
        for key, label in (("one_process", "1 process"), ("two_processes", "torchrun, 2 processes")):
            x = r[key]
            lines.append(f"| {label}: `{x['command']}` | {x['train_seconds']:.1f} | "
                         f"{x['wall_seconds']:.1f} | {100 * x['test_accuracy']['onepass']:.2f} % |")
        lines += ["", f"Speed-up of training: {r['speedup']:.2f}x on {res.get('cores', 2)} "
                  "shared cores.", ""]
    if "threads" in res:
        r = res["threads"]
        lines += ["### The README's main job with one core busy", "",
                  provenance_line(r.get("provenance")), "",
                  f"`ctxconv-train` (digits) on {r['cores']} cores: quiet, then with another "
                  "process spinning on one core (`python -c 'while True: pass'`), at the default "
                  f"thread count ({r['default_threads']}: cores - 1, at most 8) and at 2 threads "
                  "(torch's own default here), in one run.", "",
                  "| other process | threads | training seconds | wall seconds |",
                  "|---|---|---|---|"]
        for x in r["rows"]:
            lines.append(f"| {'one busy core' if x['busy_core'] else 'none'} | {x['threads']} | "
                         f"{x['train_seconds']:.1f} | {x['wall_seconds']:.1f} |")
        lines += ["", f"Default threads, busy / quiet training time: "
                  f"**{r['busy_over_quiet_default']:.2f}x** (target: within 2x).", ""]
    return lines
