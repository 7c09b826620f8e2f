"""Block-parallel against data-parallel training on the CPU: writes the "Parallel training"
section of BENCHMARKS.md.

    python benchmarks/parallel_bench.py            # about 6 min on 2 cores
    python benchmarks/parallel_bench.py --render   # the markdown from the stored numbers

The simultaneous schedule on the Fashion-MNIST benchmark model, the same config three ways
in one run, one after another (each alone on the machine, repeated ``--repeats`` times,
interleaved): one process; ``torchrun`` with 2 processes (gloo) data-parallel (each
process the whole model and half of every batch, gradients all-reduced); 2 processes
block-parallel (process 0 blocks 0-1, process 1 block 2, activations sent forward).
Seconds per epoch are read from each run's ``metrics.jsonl`` (validation excluded).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a path: the repository

from benchmarks import report
from benchmarks.provenance import ROOT
from benchmarks.report import provenance_line

NAME = "parallel"
CONFIG = ["experiment=fashion_mnist", "trainer.schedule=simultaneous", "trainer.epochs=2",
          "data.max_train_samples=12000", "trainer.progress=false", "trainer.device=cpu",
          "evaluate_test=false"]
WAYS = {
    "one process": [],
    "2 processes, data-parallel": ["torchrun"],
    "2 processes, block-parallel": ["torchrun", "trainer.parallel=block"],
}


def _command(way: list[str], run_dir: Path) -> list[str]:
    cli = ["-m", "ctxconv.train.cli", f"hydra.run.dir={run_dir}", *CONFIG,
           *[o for o in way if o != "torchrun"]]
    if "torchrun" in way:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc-per-node", "2", *cli]
    return [sys.executable, *cli]


def measure(repeats: int) -> dict:
    """Each way ``repeats`` times, interleaved; per run the epoch seconds and accuracy."""
    runs: dict[str, list[dict]] = {w: [] for w in WAYS}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread per process: 2 cores, 2 ranks
    with tempfile.TemporaryDirectory(prefix="ctxconv-parallel-") as tmp:
        for r in range(repeats):
            for way, overrides in WAYS.items():
                slug = "".join(c if c.isalnum() else "_" for c in way)  # Hydra-safe
                run_dir = Path(tmp) / f"{len(runs[way])}-{slug}"
                t0 = time.perf_counter()
                out = subprocess.run(_command(overrides, run_dir), cwd=ROOT, env=env,
                                     capture_output=True, text=True)
                wall = time.perf_counter() - t0
                if out.returncode != 0:
                    raise SystemExit(f"{way}: exit {out.returncode}: "
                                     f"{out.stderr.strip().splitlines()[-1:]}")
                rows = [json.loads(line) for line in
                        (run_dir / "metrics.jsonl").read_text().splitlines()]
                summary = json.loads((run_dir / "summary.json").read_text())
                runs[way].append({"epoch_seconds": [r["seconds"] for r in rows],
                                  "wall_seconds": round(wall, 1),
                                  "val_accuracy": summary["val_accuracy"]["multipass"],
                                  "processes": summary["processes"]})
                print(f"repeat {r}: {way}: {rows[-1]['seconds']:.1f} s/epoch", flush=True)
    return {"config": CONFIG, "omp_threads_per_process": 1, "runs": runs,
            "cores": os.cpu_count()}


def render(res: dict) -> list[str]:
    """The markdown of the parallel section, from the stored numbers only."""
    lines = ["## Parallel training on the CPU: block-parallel against data-parallel "
             "(`benchmarks/parallel_bench.py`)", "", provenance_line(res["provenance"]), "",
             f"The simultaneous schedule on the benchmark model, `{' '.join(res['config'])}`, "
             f"{res['cores']} cores, one thread per process, each run alone, the ways "
             "interleaved. Seconds per epoch (validation excluded), median over every epoch "
             "of every repeat:", "",
             "| way | s per epoch | speed-up over one process | validation % | runs |",
             "|---|---|---|---|---|"]
    med = {w: statistics.median(s for r in rs for s in r["epoch_seconds"])
           for w, rs in res["runs"].items()}
    base = med["one process"]
    for way, rs in res["runs"].items():
        vals = [r["val_accuracy"] for r in rs]
        lines.append(f"| {way} | {med[way]:.2f} | {base / med[way]:.2f}x | "
                     f"{100 * statistics.mean(vals):.2f} | {len(rs)} |")
    bp, dp = med["2 processes, block-parallel"], med["2 processes, data-parallel"]
    faster = "block-parallel" if bp < dp else "data-parallel"
    lines += ["", f"Faster of the two on 2 processes: **{faster}** (block-parallel "
              f"{dp / bp:.2f}x the speed of data-parallel). Block-parallel trains the weights "
              "of one process exactly (`tests/train/test_block_parallel.py`); its stages "
              "are as balanced as their blocks' work (here blocks 0-1 against block 2), and "
              "it sends each batch's activations once where data-parallel all-reduces every "
              "gradient."]
    return lines


def main() -> None:
    repeats = lambda p: p.add_argument("--repeats", type=int, default=2)  # noqa: E731
    if (started := report.start(__doc__, NAME, render, repeats)) is None:
        return
    args, stamp = started  # the provenance taken when the measurement starts
    res = measure(args.repeats) | {"provenance": stamp}
    report.write_section(NAME, res, render(res))


if __name__ == "__main__":
    main()
