"""Assemble BENCHMARKS.md from the sections the benchmark scripts write.

Each script writes ``benchmarks/results/<name>.md`` (and a ``.json`` with the raw numbers);
this module joins them in a fixed order under a common header.
"""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
ORDER = ["train", "host_train", "export", "sim", "firmware", "ondevice_train", "ondevice_int8",
         "ondevice_adapt"]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def git_rev() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                              capture_output=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def relative(text: str) -> str:
    """Paths inside the repository written relative to its root (results are portable)."""
    return text.replace(str(ROOT) + "/", "")


def write_section(name: str, res: dict, lines: list[str]) -> None:
    """Save a section's raw numbers and markdown, rebuild BENCHMARKS.md, print the section."""
    import json

    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(relative(json.dumps(res, indent=2, default=str)))
    text = relative("\n".join(lines))
    (RESULTS / f"{name}.md").write_text(text)
    write_benchmarks_md()
    print(text)


def write_benchmarks_md() -> Path:
    parts = ["# Benchmarks\n",
             "Every number below is produced by a script in `benchmarks/`; each section names "
             "its command, machine and date. Ratios are measured side by side in one run.\n"]
    for name in ORDER:
        section = RESULTS / f"{name}.md"
        if section.exists():
            parts.append(section.read_text().rstrip() + "\n")
    out = ROOT / "BENCHMARKS.md"
    out.write_text("\n".join(parts))
    return out
