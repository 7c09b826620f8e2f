"""What the commands promise: signed manifests, truthful exit codes, one-line errors."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from ctxconv.sim.cli import main as sim_main


@pytest.fixture(scope="module")
def export_dir(digits_export) -> Path:
    return Path(digits_export["export_dir"])


def _edited(export_dir: Path, tmp_path: Path, edit) -> Path:
    work = tmp_path / "export"
    shutil.copytree(export_dir, work)
    manifest = json.loads((work / "manifest.json").read_text())
    edit(manifest)
    (work / "manifest.json").write_text(json.dumps(manifest))
    return work


@pytest.mark.parametrize(("field", "edit"), [
    ("input.mean", lambda m: m["input"].update(mean=[0.9])),
    ("dataset.num_classes", lambda m: m["dataset"].update(num_classes=5)),
    ("input.pixel_scale", lambda m: m["input"].update(pixel_scale=0.5)),
    ("blocks[0]", lambda m: m["blocks"][0]["outputs"][0].update(zero_point=3)),
    ("quantization.calibration", lambda m: m["quantization"]["calibration"].update(samples=1)),
])  # fmt: skip
def test_edited_manifest_field_is_named(export_dir, tmp_path, capsys, field, edit):
    work = _edited(export_dir, tmp_path, edit)
    t0 = time.perf_counter()
    code = sim_main([str(work), "--mcu", "nrf52840", "--plot", str(tmp_path / "m.png")])
    seconds = time.perf_counter() - t0
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == [f"error: {work / 'manifest.json'}: field {field!r} was changed after export "
                   "(it does not match the manifest's digests); re-export"]
    assert seconds < 1.0
    assert not (tmp_path / "m.png").exists()


def test_nan_in_manifest_is_refused(export_dir, tmp_path, capsys):
    work = _edited(export_dir, tmp_path, lambda m: m["input"].update(std=[float("nan")]))
    assert sim_main([str(work), "--no-tflm-arena"]) == 2
    err = capsys.readouterr().err
    assert "field 'input.std[0]' is NaN or infinite" in err and err.count("\n") == 1


def test_old_export_without_digests_says_re_export(export_dir, tmp_path, capsys):
    def old(m: dict) -> None:
        m["format"] = "ctxconv-export-v1"
        del m["digests"]

    work = _edited(export_dir, tmp_path, old)
    assert sim_main([str(work), "--no-tflm-arena"]) == 2
    err = capsys.readouterr().err
    assert "format 'ctxconv-export-v1' was written by an older ctxconv-export" in err
    assert err.strip().endswith("re-export")


def test_missing_digests_say_re_export(export_dir, tmp_path, capsys):
    work = _edited(export_dir, tmp_path, lambda m: m.pop("digests"))
    assert sim_main([str(work), "--no-tflm-arena"]) == 2
    assert "no 'digests' field" in capsys.readouterr().err
