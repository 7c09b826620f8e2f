"""BENCHMARKS.md is what its stored numbers render to: every section's markdown equals its
renderer run on the committed results JSON, and BENCHMARKS.md equals the sections joined.
A change to a renderer (or a move of the scripts) that alters one byte fails here."""

from __future__ import annotations

import importlib
import shutil

import pytest

from benchmarks import report
from benchmarks.provenance import relative

#: section -> (module of its renderer, the renderer)
SECTIONS = {
    "quickstart": ("quickstart_bench", "render"),
    "train": ("train_render", "render"),
    "contextual": ("contextual_render", "render"),
    "accuracy": ("accuracy_render", "render"),
    "parallel": ("parallel_bench", "render"),
    "host_train": ("host_train_render", "render"),
    "host_train_gpu": ("contextual_render", "render_gpu"),
    "export": ("export_bench", "render"),
    "sim": ("sim_bench", "render"),
    "sim_speed": ("sim_speed_bench", "render"),
    "firmware": ("firmware_bench", "render"),
    "tflm_mcu": ("tflm_mcu_bench", "render"),
    "ondevice_train": ("ondevice_train_bench", "render"),
    "ondevice_int8": ("ondevice_int8_bench", "render"),
    "ondevice_adapt": ("ondevice_adapt_bench", "render"),
    "ondevice_c": ("ondevice_c_bench", "render"),
}


def _renderer(name: str):
    module, func = SECTIONS[name]
    return getattr(importlib.import_module(f"benchmarks.{module}"), func)


def _lines(out) -> list[str]:
    return out.splitlines() if isinstance(out, str) else out  # as render_section joins them


def test_every_section_has_a_renderer():
    assert set(SECTIONS) == set(report.ORDER)


@pytest.mark.parametrize("name", list(SECTIONS))
def test_section_markdown_is_its_stored_numbers_rendered(name):
    res = report.load_results(name)
    assert res, f"{name}.json is missing"
    text = relative("\n".join(_lines(_renderer(name)(res))))
    assert text == (report.RESULTS / f"{name}.md").read_text()


def test_benchmarks_md_is_the_sections_joined():
    assert report.benchmarks_md_text() == report.BENCHMARKS_MD.read_text()


def test_benchmarks_md_rendered_afresh_from_the_json_alone_is_the_committed_file(
        tmp_path, monkeypatch, capsys):
    """Only the results JSON copied, every section rendered by its renderer, BENCHMARKS.md
    written: the same bytes as the committed one."""
    results = tmp_path / "results"
    results.mkdir()
    for path in report.RESULTS.glob("*.json"):
        shutil.copy(path, results)
    monkeypatch.setattr(report, "RESULTS", results)
    monkeypatch.setattr(report, "BENCHMARKS_MD", tmp_path / "BENCHMARKS.md")
    for name in report.ORDER:
        report.render_section(name, lambda res, name=name: _lines(_renderer(name)(res)))
    committed = (report.ROOT / "BENCHMARKS.md").read_bytes()
    assert (tmp_path / "BENCHMARKS.md").read_bytes() == committed
