"""Assemble BENCHMARKS.md from the sections the benchmark scripts write.

Each script writes ``benchmarks/results/<name>.json`` (the raw numbers) and
``benchmarks/results/<name>.md`` (its section); this module joins the sections in a fixed
order under a common header. Every section (and every sub-section of the training
benchmark, which are measured separately) stores its own provenance -- machine, date,
commit and command -- in its JSON when it is measured; rendering only reads it back, so
re-rendering never changes where a number came from.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.provenance import ROOT, provenance, relative

RESULTS = ROOT / "benchmarks" / "results"
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
ORDER = ["quickstart", "train", "contextual", "accuracy", "host_train", "host_train_gpu",
         "parallel", "export", "sim", "sim_speed", "firmware", "tflm_mcu", "ondevice_train",
         "ondevice_int8", "ondevice_adapt", "ondevice_c"]
PROVENANCE_KEYS = ("machine", "date", "commit", "command")


def provenance_line(prov: dict[str, Any] | None) -> str:
    """The section's provenance as a markdown sentence (from the stored record only)."""
    if not prov:
        return "Provenance not recorded."
    text = (f"Machine: {prov['machine']}. Date: {prov['date']}. Commit: {prov['commit']}. "
            f"Command: `{prov['command']}`.")
    if prov.get("note"):
        text += f" ({prov['note']})"
    if str(prov["commit"]).endswith("-dirty"):
        text += (f" **Measured on a working tree with uncommitted changes to "
                 f"{prov['commit'].removesuffix('-dirty')}**: the code measured is not exactly "
                 "that commit.")
    return text


def load_results(name: str) -> dict:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def save_results(name: str, res: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(relative(json.dumps(res, indent=2, default=str)))


def write_section(name: str, res: dict, lines: list[str]) -> None:
    """Save a section's raw numbers and markdown, rebuild BENCHMARKS.md, print the section."""
    if "provenance" not in res:
        raise ValueError(f"section {name!r} has no provenance record")
    save_results(name, res)
    text = relative("\n".join(lines))
    (RESULTS / f"{name}.md").write_text(text)
    write_benchmarks_md()
    print(text)


def bench_parser(doc: str, name: str, **paths: str) -> argparse.ArgumentParser:
    """A benchmark script's command line: optional positional paths (``name=default``,
    relative to the repository) and ``--render``; the script adds its own options."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    for arg, default in paths.items():
        parser.add_argument(arg, nargs="?", default=str(ROOT / default))
    parser.add_argument("--render", action="store_true",
                        help=f"only rewrite the markdown from benchmarks/results/{name}.json")
    return parser


def start(doc: str, name: str, render: Callable[[dict], list[str]],
          add_options: Callable[[argparse.ArgumentParser], None] | None = None,
          **paths: str) -> tuple[argparse.Namespace, dict[str, str]] | None:
    """A benchmark script's start: its command line parsed (``bench_parser`` plus the
    script's ``add_options``); with ``--render`` the section rewritten and None, else the
    arguments and the provenance of the measurement that starts now."""
    parser = bench_parser(doc, name, **paths)
    if add_options is not None:
        add_options(parser)
    args = parser.parse_args()
    if rendered(args, name, render):
        return None
    return args, provenance()


def rendered(args: argparse.Namespace, name: str, render: Callable[[dict], list[str]]) -> bool:
    """With ``--render``, rewrite the section from its stored results and say so."""
    if args.render:
        render_section(name, render)
    return bool(args.render)


def render_section(name: str, render: Callable[[dict], list[str]]) -> None:
    """Rewrite a section's markdown from its stored JSON (no measurement, no new stamps)."""
    res = load_results(name)
    if not res:
        raise SystemExit(f"error: {RESULTS / f'{name}.json'} does not exist: run the benchmark")
    text = relative("\n".join(render(res)))
    (RESULTS / f"{name}.md").write_text(text)
    write_benchmarks_md()
    print(text)


def write_benchmarks_md() -> Path:
    BENCHMARKS_MD.write_text(benchmarks_md_text())
    return BENCHMARKS_MD


def benchmarks_md_text() -> str:
    """BENCHMARKS.md as the stored sections make it."""
    parts = ["# Benchmarks\n",
             "Every number below is produced by a script in `benchmarks/`; each section (and "
             "each part of the training section) names the machine, date, commit and command "
             "that measured it, stored with its numbers in `benchmarks/results/*.json` "
             "(`--render` rewrites the markdown from those files and keeps them). Ratios are "
             "measured side by side in one run.\n"]
    for name in ORDER:
        section = RESULTS / f"{name}.md"
        if section.exists():
            parts.append(section.read_text().rstrip() + "\n")
    return "\n".join(parts)
