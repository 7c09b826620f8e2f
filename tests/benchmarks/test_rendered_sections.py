"""BENCHMARKS.md is what its stored numbers render to: every section's markdown equals its
renderer run on the committed results JSON, and BENCHMARKS.md equals the sections joined.
A change to a renderer (or a move of the scripts) that alters one byte fails here."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

import report  # noqa: E402

#: section -> (script module, its renderer)
SECTIONS = {
    "train": ("train_bench", "render"),
    "contextual": ("contextual_bench", "render"),
    "accuracy": ("accuracy_bench", "render"),
    "parallel": ("parallel_bench", "render"),
    "host_train": ("host_train_bench", "render"),
    "host_train_gpu": ("contextual_bench", "render_gpu"),
    "export": ("export_bench", "render"),
    "sim": ("sim_bench", "render"),
    "firmware": ("firmware_bench", "render"),
    "ondevice_train": ("ondevice_train_bench", "render"),
    "ondevice_int8": ("ondevice_int8_bench", "render"),
    "ondevice_adapt": ("ondevice_adapt_bench", "render"),
}


def test_every_section_has_a_renderer():
    assert set(SECTIONS) == set(report.ORDER)


@pytest.mark.parametrize("name", list(SECTIONS))
def test_section_markdown_is_its_stored_numbers_rendered(name):
    module, func = SECTIONS[name]
    render = getattr(importlib.import_module(module), func)
    res = report.load_results(name)
    assert res, f"{name}.json is missing"
    out = render(res)
    lines = out.splitlines() if isinstance(out, str) else out  # as render_section joins them
    text = report.relative("\n".join(lines))
    assert text == (report.RESULTS / f"{name}.md").read_text()


def test_benchmarks_md_is_the_sections_joined():
    assert report.benchmarks_md_text() == report.BENCHMARKS_MD.read_text()
