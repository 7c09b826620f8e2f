"""Training benchmark: writes the "Training" section of BENCHMARKS.md.

    python benchmarks/train_bench.py            # everything (about an hour on 2 cores)
    python benchmarks/train_bench.py --only digits,memory

Sections: digits with the default ``ctxconv-train``; Fashion-MNIST (full 60k/10k)
forward-only per inference mode against a backprop baseline of the same architecture
and CwComp's published 92.31 %; peak training memory forward-only vs backprop at the
same batch; training throughput on this CPU; an ablation (validation split) of context
injection, goodness, pooled grid, normalisation and objective.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a path: the repository

from benchmarks import report
from benchmarks.provenance import ROOT, provenance
from benchmarks.runner import compose_train
from benchmarks.train_render import GOAL_RATIO, render
from ctxconv.train.baseline import train_backprop, training_memory
from ctxconv.train.checkpoint import load_checkpoint, model_config_from_dict
from ctxconv.train.config import TrainAppConfig
from ctxconv.train.data import load_datasets, make_loader, set_seed
from ctxconv.train.data_gen import DataGenConfig
from ctxconv.train.inference import evaluate
from ctxconv.train.model import ModelConfig, build_model
from ctxconv.train.run import train_run
from ctxconv.train.trainer import TrainerConfig

RUNS = Path("benchmarks") / "runs"  # relative to ROOT, where every command runs
FMNIST_CMD = ["ctxconv-train", "experiment=fashion_mnist", "trainer.progress=false"]


def sh(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def bench_digits() -> dict:
    run_dir = RUNS / "digits"
    cmd = ["ctxconv-train", f"hydra.run.dir={run_dir}", "trainer.progress=false"]
    _clear(run_dir)
    wall = sh(cmd)
    summary = json.loads((ROOT / run_dir / "summary.json").read_text())
    return {"command": " ".join(cmd), "wall_seconds": round(wall, 1), "summary": summary}


def _clear(run_dir: Path) -> None:
    for name in ("checkpoint.pt", "metrics.jsonl", "summary.json"):
        (ROOT / run_dir / name).unlink(missing_ok=True)


def bench_fashion_mnist() -> dict:
    run_dir = RUNS / "fashion_mnist"
    cmd = [*FMNIST_CMD, f"hydra.run.dir={run_dir}"]
    _clear(run_dir)
    wall = sh(cmd)
    summary = json.loads((ROOT / run_dir / "summary.json").read_text())
    rows = [json.loads(line) for line in open(ROOT / run_dir / "metrics.jsonl")]
    payload = load_checkpoint(ROOT / run_dir / "checkpoint.pt")
    model_cfg = model_config_from_dict(payload["model_config"])
    trainer_cfg = TrainerConfig(**{**payload["trainer"], "progress": False})
    data_cfg = DataGenConfig(**payload["data"])
    # backprop baseline: same architecture, same optimizer, epochs = epochs per block
    set_seed(payload["seed"])
    train, val, test, info = load_datasets(data_cfg)
    bp_model = build_model(model_cfg)
    bp_seconds = train_backprop(bp_model, train, trainer_cfg, data_cfg.batch_size,
                                payload["seed"])
    loader = make_loader(test, 1000, shuffle=False)
    bp_acc = {m: evaluate(bp_model, loader, m) for m in ("multipass", "onepass")}
    n_train = info.train_size
    fo_img_s = {f"block {b}": round(n_train / (sum(r["seconds"] for r in rows if r["block"] == b)
                                              / sum(1 for r in rows if r["block"] == b)), 1)
                for b in sorted({r["block"] for r in rows})}
    return {
        "command": " ".join(cmd), "wall_seconds": round(wall, 1), "summary": summary,
        "int8_weight_bytes": sum(p.numel() for p in bp_model.parameters()),
        "backprop": {"test_accuracy": bp_acc, "train_seconds": round(bp_seconds, 1),
                     "epochs": trainer_cfg.epochs,
                     "images_per_second": round(n_train * trainer_cfg.epochs / bp_seconds, 1)},
        "forward_only_images_per_second": fo_img_s,
        "model": asdict(model_cfg), "trainer": asdict(trainer_cfg),
    }  # fmt: skip




def measured_step_peaks(model_cfg: ModelConfig, batch: int, threads: int = 2,
                        repeats: int = 3) -> dict:
    """Peak RSS above a baseline of one Adam step per variant, each run in a fresh process
    (``benchmarks/memory_probe.py``), variants interleaved, median of ``repeats``."""
    import statistics

    variants = [f"block{b}" for b in range(len(model_cfg.blocks))] + ["backprop"]
    runs: dict[str, list[int]] = {v: [] for v in variants}
    probe = Path(__file__).resolve().parent / "memory_probe.py"
    for _ in range(repeats):
        for v in variants:
            out = subprocess.run([sys.executable, str(probe), v, json.dumps(asdict(model_cfg)),
                                  "--batch", str(batch), "--threads", str(threads)],
                                 check=True, capture_output=True, text=True, cwd=ROOT).stdout
            runs[v].append(json.loads(out.strip().splitlines()[-1])["peak_above_baseline_bytes"])
    median = {v: int(statistics.median(r)) for v, r in runs.items()}
    fo = max(median[v] for v in variants if v != "backprop")
    return {"method": "peak RSS (VmHWM) above the RSS after imports and a kernel warm-up, "
                      "one Adam step in a fresh process per run",
            "threads": threads, "repeats": repeats, "runs_bytes": runs, "median_bytes": median,
            "forward_only_peak": fo, "backprop_peak": median["backprop"],
            "ratio_forward_only_over_backprop": round(fo / median["backprop"], 3)}


def bench_memory(batch: int = 128) -> dict:
    cfg = _fmnist_app_config()
    model_cfg = ModelConfig(**{**asdict(cfg.model), "image_size": 28, "in_channels": 1})
    torch.manual_seed(0)
    model = build_model(model_cfg)
    x = torch.randn(batch, 1, 28, 28)
    y = torch.randint(0, 10, (batch,))
    fo = [training_memory(model, x, y, b) for b in range(len(model.blocks))]
    bp = training_memory(model, x, y, None)
    peak = max(m.total for m in fo)
    measured = measured_step_peaks(model_cfg, batch)
    return {"batch": batch, "forward_only_per_block": [asdict(m) | {"total": m.total} for m in fo],
            "backprop": asdict(bp) | {"total": bp.total}, "forward_only_peak": peak,
            "ratio_forward_only_over_backprop": round(peak / bp.total, 3),
            "measured": measured, "goal_ratio": GOAL_RATIO}


def bench_score_blocks() -> dict:
    """Validation accuracy of the trained Fashion-MNIST model per choice of scoring blocks."""
    from ctxconv.train.checkpoint import restore_model

    payload = load_checkpoint(ROOT / RUNS / "fashion_mnist" / "checkpoint.pt")
    model = restore_model(payload)
    _, val, _, _ = load_datasets(DataGenConfig(**payload["data"]))
    loader = make_loader(val, 1000, shuffle=False)
    n = len(model.blocks)
    rows = {}
    for blocks in ([*range(n)], [*range(1, n)], [n - 1]):
        model.score_blocks = blocks
        rows[str(blocks)] = evaluate(model, loader, "onepass")
    return {"validation_accuracy": rows, "configured": payload["model_config"]["score_blocks"]}


def bench_throughput(batch: int = 128, steps: int = 10, repeats: int = 3) -> dict:
    """Training images/s, forward-only per block vs backprop, interleaved in one run."""
    import torch.nn.functional as F

    from ctxconv.train.inference import summed_scores
    from ctxconv.train.objectives import block_loss

    cfg = _fmnist_app_config()
    model_cfg = ModelConfig(**{**asdict(cfg.model), "image_size": 28, "in_channels": 1})
    torch.manual_seed(0)
    model = build_model(model_cfg).to(memory_format=torch.channels_last)
    x = torch.randn(batch, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))
    data_gen = DataGenConfig(num_classes=10)

    def fo_step(b: int) -> None:
        with torch.no_grad():
            h = model.features(x, b)
        loss, _ = block_loss(model.blocks[b], h, y, "softmax", data_gen)
        model.zero_grad(set_to_none=True)
        loss.backward()

    def bp_step() -> None:
        loss = F.cross_entropy(summed_scores(model, x), y)
        model.zero_grad(set_to_none=True)
        loss.backward()

    runs = {f"forward-only block {b}": (lambda b=b: fo_step(b)) for b in range(len(model.blocks))}
    runs["backprop (whole network)"] = bp_step
    times: dict[str, list[float]] = {k: [] for k in runs}
    model.train()
    for fn in runs.values():
        fn()  # warm-up
    for _ in range(repeats):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            for _ in range(steps):
                fn()
            times[name].append((time.perf_counter() - t0) / steps)
    img_s = {k: round(batch / min(v), 1) for k, v in times.items()}
    fo_epoch = sum(1 / img_s[k] for k in img_s if k.startswith("forward"))
    return {"batch": batch, "steps": steps, "repeats": repeats, "images_per_second": img_s,
            "all_blocks_forward_only_over_backprop_time": round(
                fo_epoch * img_s["backprop (whole network)"], 3)}


def _fmnist_app_config():
    from omegaconf import OmegaConf

    return OmegaConf.to_object(compose_train(["experiment=fashion_mnist"]))


ABLATIONS = [
    ("default: context-free conv, linear goodness on 7x7 grid, softmax", {}, {}),
    ("objective bce (the seed's pos/neg pairs)", {}, {"objective": "bce"}),
    ("pooled grid 1x1 (per-channel context only)", {"max_grid": 1}, {}),
    ("pooled grid up to 4x4", {"max_grid": 4}, {}),
    ("norm l2 (per-sample, as in FF) instead of batch norm", {"norm": "l2"}, {}),
    ("last block contextual: pre-ReLU bias (im2col form) + linear goodness",
     {"contextual": [False, False, True], "injection": "bias"}, {}),
    ("last block contextual: bias + seed's energy goodness",
     {"contextual": [False, False, True], "injection": "bias", "goodness": "energy"}, {}),
    ("last block contextual: FiLM scale + linear goodness",
     {"contextual": [False, False, True], "injection": "film"}, {}),
]


def bench_ablation(train_samples: int = 10000, epochs: int = 3) -> dict:
    rows = []
    for name, model_kw, trainer_kw in ABLATIONS:
        cfg = TrainAppConfig()
        cfg.data = DataGenConfig(dataset="fashion_mnist", batch_size=128,
                                 max_train_samples=train_samples)
        cfg.model = ModelConfig(**{"blocks": [[1, 32, 3], [2, 64, 3], [2, 128, 3]],
                                   "max_grid": 7, **model_kw})
        cfg.trainer = TrainerConfig(**{"epochs": epochs, "lr": 2e-3, "progress": False,
                                       **trainer_kw})
        run_dir = RUNS / "ablation" / name.split(":")[0].replace(" ", "_")[:40]
        _clear(run_dir)
        t0 = time.perf_counter()
        summary = train_run(cfg, ROOT / run_dir)
        rows.append({"name": name, "val_accuracy": summary["val_accuracy"],
                     "seconds": round(time.perf_counter() - t0, 1)})
        print(rows[-1], flush=True)
    return {"train_samples": train_samples, "epochs_per_block": epochs,
            "blocks": [[1, 32, 3], [2, 64, 3], [2, 128, 3]], "rows": rows}


SECTIONS = ("digits", "memory", "throughput", "ablation", "fashion_mnist", "score_blocks")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help="comma-separated sections to (re)measure; the others keep their "
                             f"stored numbers and provenance ({', '.join(SECTIONS)})")
    parser.add_argument("--render", action="store_true",
                        help="only rewrite the markdown from benchmarks/results/train.json")
    args = parser.parse_args()
    if args.render:
        report.render_section("train", lambda res: render(res).splitlines())
        return
    sections = args.only.split(",")
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {unknown}; choose from {', '.join(SECTIONS)}")
    res = report.load_results("train")
    for section in sections:
        fn = {"digits": bench_digits, "fashion_mnist": bench_fashion_mnist,
              "memory": bench_memory, "ablation": bench_ablation,
              "throughput": bench_throughput, "score_blocks": bench_score_blocks}[section]
        print(f"== {section}", flush=True)
        stamp = provenance()  # taken when the measurement starts
        res[section] = fn() | {"provenance": stamp}
        report.save_results("train", res)
        report.render_section("train", lambda res: render(res).splitlines())


if __name__ == "__main__":
    main()
