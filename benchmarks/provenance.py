"""Where a measurement comes from: the machine, the date, the commit of the working tree
(``-dirty`` when the code differs from it) and the command, stored beside its numbers."""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


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


def machine() -> str:
    """The CPU's model name, core count and Python version, as provenance names a machine."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


#: what the benchmarks themselves write: a run measuring several parts changes these between
#: its parts, which does not make the code it measures differ from the commit
OUTPUTS = ("benchmarks/results", "BENCHMARKS.md")


def git_rev() -> str:
    """The short commit of the working tree, with ``-dirty`` when it has changes (other than
    the benchmarks' own outputs)."""
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                             capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                                ".", *(f":(exclude){p}" for p in OUTPUTS)],
                               cwd=ROOT, text=True, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):  # a copy without .git: its commit given
        return os.environ.get("CTXCONV_COMMIT", "unknown")
    return rev + ("-dirty" if dirty.strip() else "")


def relative(text: str) -> str:
    """Paths inside the repository written relative to its root (results are portable)."""
    return text.replace(str(ROOT) + "/", "")


def invoked_command() -> str:
    """The command line this script was started with, paths relative to the repository."""
    script = relative(str(Path(sys.argv[0]).resolve()))
    return relative(shlex.join(["python", script, *sys.argv[1:]]))


def provenance(command: str | None = None) -> dict[str, str]:
    """Where a measurement comes from; stored beside its numbers when it is measured."""
    return {"machine": machine(), "date": date.today().isoformat(), "commit": git_rev(),
            "command": relative(command or invoked_command())}
