"""Shared fixtures: a tiny model trained on digits in seconds, and its int8 export."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # graph_factory, tiny_runs

from tiny_runs import train_tiny  # noqa: E402


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory) -> Path:
    return train_tiny(tmp_path_factory.mktemp("digits_run"))


@pytest.fixture(scope="session")
def digits_export(digits_run) -> dict:
    """The manifest of the tiny model's int8 export (in RUN_DIR/export)."""
    from ctxconv.export.exporter import ExportOptions, export_run

    return export_run(digits_run, digits_run / "export", ExportOptions(verify_samples=60))
