"""Side-by-side ``ctxconv-train`` runs for the benchmarks: one run's command, and a pool that
starts queued runs into free slots and kills what still runs at a deadline."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASE = ["experiment=fashion_mnist", "trainer.progress=false"]
T0 = time.time()


@dataclass
class Run:
    """One ``ctxconv-train`` invocation."""

    name: str
    group: str  # the benchmark's name for the runs that belong together
    overrides: list[str]
    seed: int = 0
    test: bool = True
    threads: int | None = 1  # side by side: one CPU thread each; None: the default
    result: dict = field(default_factory=dict)
    base: list[str] = field(default_factory=lambda: list(BASE))

    def command(self, out: Path, device: str, extra: list[str]) -> list[str]:
        threads = [] if self.threads is None else [f"threads={self.threads}"]
        return [sys.executable, "-m", "ctxconv.train.cli", *self.base, *self.overrides,
                f"seed={self.seed}", f"trainer.device={device}", *threads,
                f"evaluate_test={str(self.test).lower()}", *extra,
                f"hydra.run.dir={out / 'runs' / self.name}"]


def summary(out: Path, run: Run) -> dict | None:
    path = out / "runs" / run.name / "summary.json"
    return json.loads(path.read_text()) if path.exists() else None


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
        return {r.name: {"group": r.group, "seed": r.seed, "overrides": r.overrides,
                         **r.result} for r in self.done}

    def kill_all(self) -> None:
        for _, (proc, _, run) in self.live.items():
            proc.kill()
            run.result.update(killed_at_deadline=True)
            self.done.append(run)
        self.live.clear()


def machine_info() -> dict:
    """Python, CPU count, torch and the GPU's name where there is one."""
    info = {"python": platform.python_version(), "cpus": os.cpu_count()}
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


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
    import statistics

    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0
