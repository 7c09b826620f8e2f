"""An unfinished run, or one whose measured accuracy is at chance, never passes as finished."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from ctxconv.export.cli import main as export_main
from ctxconv.export.exporter import ExportOptions, export_run
from ctxconv.export.run_check import RunCheckError
from ctxconv.train.checkpoint import load_checkpoint, save_checkpoint


@pytest.fixture()
def run_copy(digits_run, tmp_path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(digits_run, dst, ignore=shutil.ignore_patterns("export*"))
    return dst


def _rewrite(run_dir: Path, done: bool | None = None, zero: bool = False) -> None:
    payload = load_checkpoint(run_dir / "checkpoint.pt")
    if done is not None:
        payload["progress"] = {**payload["progress"], "done": done, "epoch": 1}
    if zero:  # every score equal: the model always answers class 0
        payload["state_dict"] = {
            k: (torch.ones_like(v) if k.endswith("running_var") else torch.zeros_like(v))
            if v.is_floating_point() else v for k, v in payload["state_dict"].items()}
    save_checkpoint(run_dir / "checkpoint.pt", payload)


def test_run_still_training_is_refused_unless_allowed(run_copy, capsys):
    _rewrite(run_copy, done=False)
    (run_copy / "summary.json").unlink()
    with pytest.raises(RunCheckError, match=r"is not a finished run: its training is unfinished"):
        export_run(run_copy)
    assert export_main([str(run_copy), "--int8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0]
    assert (f"finish it with ctxconv-train hydra.run.dir={run_copy} resume=true, or pass "
            "--allow-unfinished to export it anyway") in err[0]
    assert not (run_copy / "export").exists()
    assert export_main([str(run_copy), "--int8", "--allow-unfinished", "--verify-samples",
                        "20"]) == 0
    assert "the run is unfinished (--allow-unfinished)" in capsys.readouterr().out
    manifest = json.loads((run_copy / "export" / "manifest.json").read_text())
    assert manifest["run"]["finished"] is False


def test_finished_checkpoint_without_summary_is_refused(run_copy, capsys):
    (run_copy / "summary.json").unlink()
    assert export_main([str(run_copy), "--int8"]) == 2
    err = capsys.readouterr().err
    assert "it has no summary.json (training stopped before its evaluation)" in err
    assert err.count("error:") == 1


def test_finished_run_is_recorded_as_finished(digits_export):
    assert digits_export["run"]["finished"] is True
    assert digits_export["run_check"]["chance"]["at_chance"] is False


def test_measured_accuracy_at_chance_is_refused_without_summary(run_copy, capsys):
    _rewrite(run_copy, zero=True)
    (run_copy / "summary.json").unlink()
    with pytest.raises(RunCheckError, match=r"the float test accuracy measured at export "
                                            r"\d+\.\d\d% is at or below chance level"):
        export_run(run_copy, options=ExportOptions(allow_unfinished=True))
    assert export_main([str(run_copy), "--int8", "--allow-unfinished"]) == 2
    assert "pass --allow-untrained to export it anyway" in capsys.readouterr().err
    assert not (run_copy / "export").exists()
