"""The benchmarks' runner: ``ctxconv-train`` runs as subprocesses (one run's command, a pool
that starts queued runs into free slots and kills what still runs at a deadline, the record
of every run), the test split read once by a trained run, its int8 export and simulation,
and the helpers the scripts share (``provenance`` says where a measurement comes from).

A run names a Hydra experiment (``ctxconv/configs/experiment/``) and adds only its own
overrides; :func:`experiment_settings` gives the settings a named experiment stands for.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.provenance import ROOT, machine_info, provenance

#: the experiment every other one is told against (the Fashion-MNIST benchmark model)
DEFAULT_EXPERIMENT = "fashion_mnist"
T0 = time.time()


@dataclass
class Run:
    """One ``ctxconv-train`` invocation: a named experiment and the run's own overrides."""

    name: str
    group: str  # the benchmark's name for the runs that belong together
    overrides: list[str]
    seed: int = 0
    test: bool = True
    threads: int | None = 1  # side by side: one CPU thread each; None: the default
    experiment: str = DEFAULT_EXPERIMENT
    result: dict = field(default_factory=dict)

    @property
    def base(self) -> list[str]:
        return [f"experiment={self.experiment}", "trainer.progress=false"]

    def command(self, out: Path, device: str, extra: list[str]) -> list[str]:
        threads = [] if self.threads is None else [f"threads={self.threads}"]
        return [sys.executable, "-m", "ctxconv.train.cli", *self.base, *self.overrides,
                f"seed={self.seed}", f"trainer.device={device}", *threads,
                f"evaluate_test={str(self.test).lower()}", *extra,
                f"hydra.run.dir={out / 'runs' / self.name}"]


def train_command(record: dict, *tail: str) -> str:
    """A recorded run as the ``ctxconv-train`` command a reader can type (``tail`` after its
    overrides); records from before runs named their experiment are the default's."""
    experiment = record.get("experiment", DEFAULT_EXPERIMENT)
    return " ".join(["ctxconv-train", f"experiment={experiment}", "trainer.progress=false",
                     *record["overrides"], *tail])


def summary(out: Path, run: Run | str) -> dict | None:
    """A run's ``summary.json`` (``run`` or its name), None until it has one."""
    path = out / "runs" / (run if isinstance(run, str) else run.name) / "summary.json"
    return json.loads(path.read_text()) if path.exists() else None


def metrics(out: Path, name: str) -> list[dict]:
    """A run's per-epoch rows (``metrics.jsonl``), none before it has any."""
    path = out / "runs" / name / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()
            ] if path.is_file() else []


class Pool:
    """Subprocesses, at most ``jobs`` at once, all killed at the deadline."""

    def __init__(self, out: Path, device: str, extra: list[str], jobs: int, deadline: float):
        self.out, self.device, self.extra = out, device, extra
        self.jobs, self.deadline = jobs, deadline
        self.queue: list[Run] = []
        self.live: dict[str, tuple[subprocess.Popen, float, Run]] = {}
        self.done: list[Run] = []

    def start(self, run: Run) -> None:
        cmd = run.command(self.out, self.device, self.extra)
        log_dir = self.out / "runs" / run.name
        log_dir.mkdir(parents=True, exist_ok=True)
        run.result["command"] = " ".join(cmd[1:])
        run.result["started_at"] = round(time.time() - T0, 1)
        log = open(log_dir / "cli.log", "w")
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        self.live[run.name] = (proc, time.perf_counter(), run)

    def poll(self) -> list[Run]:
        """Start queued runs into free slots; return the runs that ended since last time."""
        ended = []
        for name, (proc, t0, run) in list(self.live.items()):
            if proc.poll() is not None:
                run.result.update(wall_seconds=round(time.perf_counter() - t0, 1),
                                  returncode=proc.returncode, summary=summary(self.out, run))
                del self.live[name]
                self.done.append(run)
                ended.append(run)
                print(f"[{time.time() - T0:6.0f}s] {run.name}: rc {proc.returncode}, "
                      f"{run.result['wall_seconds']}s", flush=True)
        while self.queue and len(self.live) < self.jobs:
            self.start(self.queue.pop(0))
        return ended

    def run_alone(self, run: Run) -> None:
        """``run`` with nothing else running (its wall time is a measurement)."""
        self.start(run)
        while self.live:
            time.sleep(0.5)
            self.poll()

    @property
    def expired(self) -> bool:
        return time.time() > self.deadline

    def drain(self, tick: float = 0.5, after_poll=None) -> None:
        """Run the queue to its end (``after_poll`` called after each poll); at the deadline
        kill what still runs."""
        while self.queue or self.live:
            if self.expired:
                self.kill_all()
                return
            time.sleep(tick)
            self.poll()
            if after_poll is not None:
                after_poll()

    def record(self) -> dict:
        """Every ended run, by name, as results.json stores it."""
        return {r.name: {"group": r.group, "seed": r.seed, "experiment": r.experiment,
                         "overrides": r.overrides, **r.result} for r in self.done}

    def kill_all(self) -> None:
        for _, (proc, _, run) in self.live.items():
            proc.kill()
            run.result.update(killed_at_deadline=True)
            self.done.append(run)
        self.live.clear()


def side_by_side(out: Path, device: str, tag: str, runs: list[Run], deadline: float,
                 extra: list[str], jobs: int | None = None, tar_by: str | None = None,
                 **fields) -> dict:
    """``runs`` side by side (one thread each, at most ``jobs`` at once) as
    ``out/results_<tag>.json`` with their provenance and ``fields``, and a tar of their run
    folders for transport (``tar_by="run"``: one tar per run name without its seed)."""
    out.mkdir(parents=True, exist_ok=True)
    pool = Pool(out, device, extra, jobs or len(runs), T0 + deadline)
    prov = provenance()
    pool.queue = list(runs)
    pool.drain()
    results = {"machine": machine_info(), "provenance": prov, "device": device,
               "extra_overrides": extra, **fields, "runs": pool.record()}
    (out / f"results_{tag}.json").write_text(json.dumps(results, indent=1))
    bundles: dict[str, list[Run]] = {}
    for run in pool.done:
        bundles.setdefault(run.name.rsplit("_seed", 1)[0] if tar_by == "run" else tag,
                           []).append(run)
    for key, members in bundles.items():
        with tarfile.open(out / f"runs_{key}.tar", "w") as tar:
            for run in members:
                tar.add(out / "runs" / run.name, arcname=run.name)
    return results


def copy_to_read_test(src: Path, dst: Path, device: str) -> list[str]:
    """A trained run's folder copied to ``dst``, and the command that reads that copy's test
    split once (``resume=true evaluate_test=true``: no training); the source stays as
    trained. Refuses a ``dst`` that exists: the test split is read once."""
    if dst.exists():
        raise SystemExit(f"{dst} exists: remove it to read the test split again")
    shutil.copytree(src, dst)
    return [sys.executable, "-m", "ctxconv.train.cli", f"hydra.run.dir={dst}", "resume=true",
            "evaluate_test=true", "trainer.progress=false", f"trainer.device={device}"]


def export_int8(run_dir: Path) -> tuple[int, float]:
    """``ctxconv-export RUN --int8`` (log ``export.log``): (exit code, seconds)."""
    return sh(["ctxconv-export", str(run_dir), "--int8"], run_dir / "export.log")


def simulate(export: Path, mcu: str, report: Path, log: Path, *args: str) -> tuple[int, float]:
    """``ctxconv-sim`` of an export on ``mcu`` (its JSON report to ``report``): (exit code,
    seconds)."""
    return sh(["ctxconv-sim", str(export), "--mcu", mcu, "--json", str(report),
               "--no-tflm-arena", *args], log)


def evaluation(run_dir: Path, logged: dict, mcu: str = "nrf52840") -> dict:
    """int8 accuracy, MACs, latency and memory of a run, read from its export and simulator
    reports on disk (the files an export and ``simulate`` write)."""
    manifest_path = run_dir / "export" / "manifest.json"
    if not manifest_path.exists():
        return {"export_error": logged.get("error") or ["not exported"]} if logged else {}
    manifest = json.loads(manifest_path.read_text())
    acc = manifest["accuracy"]
    row: dict = {"int8_export_accuracy": {
        **{f"int8_{m}": v for m, v in acc.get("int8", {}).items()},
        **{f"float_{m}": v for m, v in acc["float"].items()}}}
    agreement = manifest.get("agreement", {})
    if not agreement.get("passed", True):
        row["verification_failures"] = agreement.get("failures", [])
    for report in sorted(run_dir.glob(f"sim_{mcu}_*.json")):
        sim = json.loads(report.read_text())
        row[f"sim_{sim['mode']}"] = {k: sim[k] for k in ("accuracy", "macs", "latency_ms",
                                                         "sram_bytes", "arena_bytes",
                                                         "flash_bytes", "fits", "images")}
    return row


def export_and_simulate(run_dir: Path, mcu: str, reuse: bool = False,
                        images: int | None = None) -> dict:
    """A trained run's int8 export (``reuse``: an existing one kept) and the simulator on
    ``mcu`` in each mode the export's manifest names (one where the modes coincide), on the
    first ``images`` test images or all: exit codes, seconds and the simulator's reports."""
    from ctxconv.blockgraph.pipeline import modes_coincide

    export = run_dir / "export"
    if reuse and (export / "manifest.json").exists():
        rc, secs = 0, json.loads((export / "manifest.json").read_text())["export_seconds"]
    else:
        rc, secs = export_int8(run_dir)
    entry: dict = {"export_seconds": secs, "export_rc": rc}
    if rc == 3 and (export / "manifest.json").exists():  # runtimes disagree: kept
        entry["verification_failed"] = True
    if rc == 0 or entry.get("verification_failed"):
        manifest = json.loads((export / "manifest.json").read_text())
        entry["manifest_accuracy"] = manifest.get("accuracy")
        modes = manifest["modes"]
        for mode in modes[-1:] if modes_coincide(manifest) else modes:
            report = run_dir / f"sim_{mcu}_{mode}.json"
            rc_sim = simulate(export, mcu, report, run_dir / f"sim_{mode}.log", "--mode", mode,
                              "--bit-exact-images", "200",
                              *(["--images", str(images)] if images else []))[0]
            entry[f"sim_{mode}"] = (json.loads(report.read_text()) if rc_sim == 0
                                    else {"rc": rc_sim})
    else:
        entry["error"] = (run_dir / "export.log").read_text().strip().splitlines()[-1:]
    return entry


def timed_record(run: dict, rows: list[dict]) -> dict:
    """A timed run's seconds per epoch of each block, and its totals."""
    summ = run["summary"]
    return {"train_seconds": summ["train_seconds"], "wall_seconds": run["wall_seconds"],
            "val": summ["val_accuracy"]["onepass"], "prefix_cache": summ["prefix_cache"],
            "epoch_seconds": {str(b): [r["seconds"] for r in rows if r["block"] == b]
                              for b in sorted({r["block"] for r in rows})},
            "command": train_command(run, "trainer.device=cuda")}


def bundle(out: Path, groups: str, seeds: Sequence[int]) -> None:
    """One tar per group of finals (``<group>_seed<s>``: checkpoints and run files) and one of
    every other run without its checkpoint, for transport."""
    for group in groups:
        with tarfile.open(out / f"runs_{group}.tar", "w") as tar:
            for seed in seeds:
                run_dir = out / "runs" / f"{group}_seed{seed}"
                if run_dir.is_dir():
                    tar.add(run_dir, arcname=run_dir.name)
    final_names = {f"{g}_seed{s}" for g in groups for s in seeds}
    with tarfile.open(out / "runs_other.tar.gz", "w:gz") as tar:  # ablations: no checkpoints
        for run_dir in sorted((out / "runs").iterdir()):
            if run_dir.name not in final_names:
                for f in run_dir.glob("*"):
                    if f.name != "checkpoint.pt":
                        tar.add(f, arcname=f"{run_dir.name}/{f.name}")


def float_on_first(run_dir: Path, n: int) -> float:
    """Float multipass accuracy of a run's checkpoint on the first ``n`` test images (what a
    simulator run on ``--images n`` sees), for an int8-vs-float gap on the same images."""
    import torch

    from ctxconv.train.checkpoint import load_checkpoint, restore_model
    from ctxconv.train.data import DataConfig, load_datasets
    from ctxconv.train.inference import multipass_scores

    payload = load_checkpoint(run_dir / "checkpoint.pt")
    model = restore_model(payload, run_dir / "checkpoint.pt").eval()
    data = DataConfig(**{k: v for k, v in payload["data"].items()
                         if k in DataConfig.__dataclass_fields__})
    data.num_classes, data.max_test_samples = None, n
    test = load_datasets(data)[2]
    x, y = test.tensors
    with torch.no_grad():
        preds = torch.cat([multipass_scores(model, x[i:i + 250]).argmax(1)
                           for i in range(0, len(x), 250)])
    return float((preds == y).float().mean())


def compose_train(overrides: Sequence[str]):
    """``ctxconv-train``'s config for ``overrides``, as the command composes it (Hydra)."""
    from hydra import compose, initialize_config_module

    from ctxconv.train.config import register_configs

    register_configs()
    with initialize_config_module("ctxconv.configs", version_base=None):
        return compose("train", overrides=list(overrides))


def _leaves(node, prefix: str = "") -> dict[str, object]:
    if isinstance(node, dict):
        return {k: v for key, sub in node.items() for k, v in _leaves(sub, f"{prefix}{key}.")
                .items()}
    return {prefix[:-1]: node}


def _value(v) -> str:
    if isinstance(v, list):
        return "[" + ",".join(_value(x) for x in v) + "]"
    return "null" if v is None else str(v).lower() if isinstance(v, bool) else str(v)


def experiment_settings(experiment: str, overrides: Sequence[str] = ()) -> list[str]:
    """What ``experiment=<experiment>`` and ``overrides`` set beyond the default experiment,
    as ``key=value`` overrides (each key once): the settings a record shows."""
    from omegaconf import OmegaConf

    if experiment == DEFAULT_EXPERIMENT:
        return overridden([], list(overrides))
    base, named = (_leaves(OmegaConf.to_container(compose_train([f"experiment={e}"])))
                   for e in (DEFAULT_EXPERIMENT, experiment))
    own = [f"{k}={_value(v)}" for k, v in named.items() if base.get(k, v) != v or k not in base]
    return overridden(own, list(overrides))


def overridden(base: list[str], settings: list[str]) -> list[str]:
    """``base`` then ``settings``, each key once, where it last appears (as Hydra applies
    them, the last value of a key wins)."""
    both = [*base, *settings]
    keys = [o.split("=", 1)[0] for o in both]
    return [o for i, o in enumerate(both) if keys[i] not in keys[i + 1:]]


def sh(cmd: list[str], log: Path) -> tuple[int, float]:
    """Run ``cmd`` in the repository, its output to ``log``: (exit code, seconds)."""
    t0 = time.perf_counter()
    with open(log, "w") as f:
        rc = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT).returncode
    return rc, round(time.perf_counter() - t0, 1)


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def pct(x: float) -> str:
    """A fraction as a percentage with two decimals."""
    return f"{100 * x:.2f}"
