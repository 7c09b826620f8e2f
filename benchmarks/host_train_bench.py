"""Host training at scale: writes the "Host training" section of BENCHMARKS.md.

    python benchmarks/host_train_bench.py                  # everything (about 15 min on 2 cores)
    python benchmarks/host_train_bench.py --only throughput,threads

Sections: training throughput per block on Fashion-MNIST with and without the frozen-prefix
cache against backprop (fixed batches, interleaved); one real epoch per block on the full
training set with and without the cache beside one backprop epoch; 2-process torchrun on
the CPU against one process; the README's main job on a quiet machine and with one core
busy, at the default thread count and at 2 threads.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a path: the repository

from benchmarks import report
from benchmarks.host_train_render import render
from benchmarks.provenance import ROOT, provenance
from benchmarks.train_bench import RUNS, _fmnist_app_config
from ctxconv.train.baseline import train_backprop
from ctxconv.train.data import load_datasets, set_seed
from ctxconv.train.device import default_threads
from ctxconv.train.inference import summed_scores
from ctxconv.train.model import ModelConfig, build_model
from ctxconv.train.objectives import BlockObjective
from ctxconv.train.prefix_cache import CachePlan, build_cache
from ctxconv.train.run import train_run

NAME = "host_train"
PY = sys.executable


def _fmnist():
    cfg = _fmnist_app_config()
    set_seed(0)
    train, val, test, info = load_datasets(cfg.data)
    model_cfg = ModelConfig(**{**asdict(cfg.model), "image_size": info.image_size,
                               "in_channels": info.in_channels, "num_classes": info.num_classes})
    return cfg, train, model_cfg


def bench_throughput(batches: int = 20, repeats: int = 3) -> dict:
    """Images/s of one training step per block, cached vs not, and backprop (interleaved)."""
    cfg, train, model_cfg = _fmnist()
    bs = cfg.data.batch_size
    torch.manual_seed(0)
    model = build_model(model_cfg).to(memory_format=torch.channels_last)
    cfg.data.num_classes = model_cfg.num_classes
    images, labels = train.tensors
    n = batches * bs
    x_all, y_all = images[:n].contiguous(memory_format=torch.channels_last), labels[:n]
    caches = {b: build_cache(model, b, x_all, CachePlan(torch.device("cpu"), torch.float32, 0, ""),
                             torch.device("cpu"), bs) for b in range(1, len(model.blocks))}

    def fo(b: int, cached: bool):
        obj = BlockObjective(model.blocks[b], "softmax", cfg.data, input_pooled=cached)

        def run():
            for blk in model.blocks[:b]:
                blk.eval()  # the frozen prefix, as in the trainer
            model.blocks[b].train()
            for i in range(batches):
                y = y_all[i * bs:(i + 1) * bs]
                if cached:
                    x = caches[b][i * bs:(i + 1) * bs]
                else:
                    with torch.no_grad():
                        x = model.features(x_all[i * bs:(i + 1) * bs], b)
                loss, _ = obj(x, y)
                model.zero_grad(set_to_none=True)
                loss.backward()
        return run

    def bp():
        model.train()
        for i in range(batches):
            loss = F.cross_entropy(summed_scores(model, x_all[i * bs:(i + 1) * bs]),
                                   y_all[i * bs:(i + 1) * bs])
            model.zero_grad(set_to_none=True)
            loss.backward()

    def prefix(b: int):
        plan = CachePlan(torch.device("cpu"), torch.float32, 0, "")
        return lambda: build_cache(model, b, x_all, plan, torch.device("cpu"), bs)

    runs = {}
    for b in range(len(model.blocks)):
        runs[f"block {b}, prefix recomputed"] = fo(b, False)
        if b > 0:
            runs[f"block {b}, cached prefix"] = fo(b, True)
            runs[f"block {b}, building the cache (prefix forward, no grad)"] = prefix(b)
    runs["backprop, whole network"] = bp
    times: dict[str, list[float]] = {k: [] for k in runs}
    for fn in runs.values():
        fn()  # warm-up
    for _ in range(repeats):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    img_s = {k: round(n / min(v), 1) for k, v in times.items()}
    k = len(model.blocks)
    sec = {name: 1.0 / v for name, v in img_s.items()}  # seconds per image
    no_cache = sum(sec[f"block {b}, prefix recomputed"] for b in range(k))
    cached = sec["block 0, prefix recomputed"] + sum(sec[f"block {b}, cached prefix"]
                                                     for b in range(1, k))
    build = sum(sec[f"block {b}, building the cache (prefix forward, no grad)"]
                for b in range(1, k))
    epochs = cfg.trainer.epochs
    bp_sec = sec["backprop, whole network"]
    return {"batch": bs, "batches": batches, "repeats": repeats, "threads": torch.get_num_threads(),
            "images_per_second": img_s, "epochs_per_block": epochs,
            "ratio_no_cache": round(no_cache / bp_sec, 3),
            "ratio_cache": round(cached / bp_sec, 3),
            "ratio_cache_with_build": round((cached + build / epochs) / bp_sec, 3)}


def bench_epoch(epochs: int = 2) -> dict:
    """Two real epochs per block on the full training set, cache on vs off, and backprop."""
    rows = {}
    for mode in ("on", "off"):
        cfg = _fmnist_app_config()
        cfg.trainer.epochs, cfg.trainer.progress, cfg.trainer.cache_prefix = epochs, False, mode
        cfg.trainer.device, cfg.overwrite = "cpu", True
        run_dir = ROOT / RUNS / f"host_epoch_{mode}"
        t0 = time.perf_counter()
        summary = train_run(cfg, run_dir)
        wall = time.perf_counter() - t0
        metrics = [json.loads(line) for line in open(run_dir / "metrics.jsonl")]
        sec = [[m["seconds"] for m in metrics if m["block"] == b] for b in range(3)]
        rows[mode] = {"wall_seconds": round(wall, 1), "train_seconds": summary["train_seconds"],
                      "first_epoch_seconds": [round(s[0], 1) for s in sec],
                      "later_epoch_seconds": [round(s[-1], 1) for s in sec],
                      "images_per_second": [round(summary["train_size"] / s[-1], 1) for s in sec],
                      "prefix_cache": summary["prefix_cache"],
                      "val_accuracy": summary["val_accuracy"]}
        print(mode, rows[mode], flush=True)
    cfg = _fmnist_app_config()  # every block on every batch: one pass trains all three
    cfg.trainer.epochs, cfg.trainer.progress, cfg.trainer.schedule = epochs, False, "simultaneous"
    cfg.trainer.device, cfg.overwrite = "cpu", True
    run_dir = ROOT / RUNS / "host_epoch_simultaneous"
    summary = train_run(cfg, run_dir)
    sec = [json.loads(line)["seconds"] for line in open(run_dir / "metrics.jsonl")]
    rows["simultaneous"] = {"epoch_seconds": [round(s, 1) for s in sec],
                            "images_per_second": round(summary["train_size"] / sec[-1], 1),
                            "val_accuracy": summary["val_accuracy"]}
    cfg, train, model_cfg = _fmnist()
    cfg.trainer.epochs = 1
    torch.manual_seed(0)
    bp_seconds = train_backprop(build_model(model_cfg), train, cfg.trainer, cfg.data.batch_size)
    rows["backprop"] = {"train_seconds": round(bp_seconds, 1),
                        "images_per_second": round(len(train) / bp_seconds, 1)}
    rows["train_size"], rows["epochs"] = len(train), epochs
    rows["threads"] = torch.get_num_threads()
    for mode in ("on", "off"):
        rows[mode]["later_epoch_over_backprop"] = round(
            sum(rows[mode]["later_epoch_seconds"]) / bp_seconds, 3)
    rows["simultaneous"]["later_epoch_over_backprop"] = round(
        rows["simultaneous"]["epoch_seconds"][-1] / bp_seconds, 3)
    return rows


def _train_seconds(args: list[str], run_dir: Path, torchrun: int = 0) -> dict:
    cmd = [PY, "-m", "ctxconv.train.cli", f"hydra.run.dir={run_dir}", "overwrite=true",
           "trainer.progress=false", *args]
    if torchrun:
        cmd = [PY, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={torchrun}",
               *cmd[1:]]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    summary = json.loads((run_dir / "summary.json").read_text())
    shown = [f"torchrun --standalone --nproc-per-node {torchrun} -m ctxconv.train.cli"
             if torchrun else "ctxconv-train", *args]
    return {"command": " ".join(shown),
            "wall_seconds": round(wall, 1), "train_seconds": summary["train_seconds"],
            "test_accuracy": summary["test_accuracy"]}


def bench_torchrun(samples: int = 12000) -> dict:
    """The Fashion-MNIST model on a subset, 1 epoch per block: 1 process vs torchrun 2."""
    args = ["experiment=fashion_mnist", f"data.max_train_samples={samples}", "trainer.epochs=1",
            "trainer.device=cpu"]
    one = _train_seconds([*args, "threads=1"], ROOT / RUNS / "host_torchrun_1")
    two = _train_seconds(args, ROOT / RUNS / "host_torchrun_2", torchrun=2)
    return {"samples": samples, "one_process": one, "two_processes": two,
            "speedup": round(one["train_seconds"] / two["train_seconds"], 2)}


def bench_threads() -> dict:
    """The README's main job quiet and with one core busy, default threads vs 2 threads."""
    rows = []
    for busy in (False, True):
        hog = subprocess.Popen([PY, "-c", "while True: pass"]) if busy else None
        try:
            for threads in (None, 2):
                args = [] if threads is None else [f"threads={threads}"]
                r = _train_seconds(args, ROOT / RUNS / "host_threads")
                rows.append({"busy_core": busy, "threads": threads or default_threads(), **r})
                print(rows[-1], flush=True)
        finally:
            if hog is not None:
                hog.kill()
                hog.wait()
    quiet = next(r for r in rows if not r["busy_core"] and r["threads"] == default_threads())
    busy = next(r for r in rows if r["busy_core"] and r["threads"] == default_threads())
    return {"rows": rows, "default_threads": default_threads(), "cores": os.cpu_count(),
            "busy_over_quiet_default": round(busy["train_seconds"] / quiet["train_seconds"], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="throughput,epoch,torchrun,threads",
                        help="comma-separated sections to (re)measure")
    parser.add_argument("--render", action="store_true",
                        help="only rewrite the markdown from benchmarks/results/host_train.json")

    args = parser.parse_args()
    if args.render:
        report.render_section(NAME, render)
        return
    torch.set_num_threads(default_threads())  # what ctxconv-train uses on this machine
    res = report.load_results(NAME)
    fns = {"throughput": bench_throughput, "epoch": bench_epoch, "torchrun": bench_torchrun,
           "threads": bench_threads}
    sections = args.only.split(",")
    unknown = [x for x in sections if x not in fns]
    if unknown:
        parser.error(f"unknown section(s) {unknown}; choose from {', '.join(fns)}")
    for section in sections:
        print(f"== {section}", flush=True)
        stamp = provenance()  # taken when the measurement starts, with the machine's load
        stamp["note"] = f"load average {os.getloadavg()[0]:.1f} at the start of this part"
        res[section] = fns[section]() | {"provenance": stamp}
        res["cores"] = os.cpu_count()
        report.save_results(NAME, res)
        report.render_section(NAME, render)


if __name__ == "__main__":
    main()
