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


#: block variants the exporter writes as MUL / MEAN / L2_NORMALIZATION (model config)
VARIANT_MODELS = {
    "film": dict(contextual=[False, True], injection="film"),
    "energy": dict(contextual=[False, True], goodness="energy"),
    "l2": dict(norm="l2"),
}


@pytest.fixture(scope="session")
def variant_export(tmp_path_factory):
    """``variant_export(name)``: the manifest of a tiny trained model of that variant's
    int8 export (built once per session)."""
    from ctxconv.export.exporter import ExportOptions, export_run

    done: dict[str, dict] = {}

    def get(name: str) -> dict:
        if name not in done:
            tmp = tmp_path_factory.mktemp(f"variant_{name}")
            run = train_tiny(tmp / "run", epochs=2, **VARIANT_MODELS[name])
            opts = ExportOptions(verify_samples=40, allow_untrained=True, max_lsb=3)
            done[name] = export_run(run, tmp / "export", opts)
        return done[name]

    return get
