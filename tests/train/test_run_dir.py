"""The run directory under interruptions: overwrite, resume, metrics.jsonl, summary.json."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_runs import small_app

from ctxconv.train import trainer as trainer_mod
from ctxconv.train.run import train_run

TRAIN = [sys.executable, "-m", "ctxconv.train.cli"]
QUICK = ["model.blocks=[[1,4,3],[2,4,3]]", "trainer.epochs=2", "data.max_train_samples=200",
         "trainer.progress=false", "trainer.device=cpu"]


def cli(*args):
    return subprocess.run([*TRAIN, *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})


def interrupted(cfg, run_dir: Path, monkeypatch, at_save: int) -> None:
    """Train until the ``at_save``-th checkpoint write, which is interrupted (as by a kill)."""
    real, calls = trainer_mod.save_checkpoint, []

    def save(path, payload):
        calls.append(path)
        if len(calls) == at_save:
            raise KeyboardInterrupt
        real(path, payload)

    monkeypatch.setattr(trainer_mod, "save_checkpoint", save)
    with pytest.raises(KeyboardInterrupt):
        train_run(cfg, run_dir)
    monkeypatch.setattr(trainer_mod, "save_checkpoint", real)


def rows(run_dir: Path) -> list[tuple[int, int]]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [(r["block"], r["epoch"]) for r in map(json.loads, lines)]


def test_kill_during_a_checkpoint_write_logs_no_epoch_twice(tmp_path, monkeypatch, caplog):
    interrupted(small_app(), tmp_path, monkeypatch, at_save=3)  # block 1 epoch 0
    assert rows(tmp_path) == [(0, 0), (0, 1), (1, 0)]  # the row went out before the write
    cfg = small_app()
    cfg.resume = True
    train_run(cfg, tmp_path)
    assert rows(tmp_path) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert "dropped 1 row(s) of epochs after the checkpoint's (block 0 epoch 1)" in caplog.text


def test_torn_last_metrics_line_is_dropped_on_resume(tmp_path, monkeypatch, caplog):
    interrupted(small_app(), tmp_path, monkeypatch, at_save=3)
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"block": 1, "epoch": 1, "train_lo')  # a kill mid-append
    for _ in range(2):  # the first resume repairs the file, the second reads it whole
        cfg = small_app()
        cfg.resume = True
        train_run(cfg, tmp_path)
    assert "dropped 1 unreadable line(s) (a write was interrupted)" in caplog.text
    assert rows(tmp_path) == [(0, 0), (0, 1), (1, 0), (1, 1)]


def test_interrupted_overwrite_resumes_and_drops_the_old_summary(tmp_path, monkeypatch):
    train_run(small_app(epochs=1), tmp_path)
    assert (tmp_path / "summary.json").is_file()
    cfg = small_app()
    cfg.overwrite = True
    interrupted(cfg, tmp_path, monkeypatch, at_save=2)
    assert not (tmp_path / "summary.json").exists()  # never the old run's accuracy
    assert "overwrite: false" in (tmp_path / "config.yaml").read_text()
    out = cli(f"hydra.run.dir={tmp_path}", "resume=true", "trainer.progress=false")
    assert out.returncode == 0, out.stderr[-2000:]
    assert rows(tmp_path) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert (tmp_path / "summary.json").is_file()


@pytest.mark.parametrize("bad", ["trainer.optimizer=adamw", "data.batch_size=0",
                                 "trainer.objective=[softmax]"])
def test_overwrite_checks_the_whole_config_before_deleting_anything(tmp_path, bad):
    assert cli(f"hydra.run.dir={tmp_path}", *QUICK).returncode == 0
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    out = cli(f"hydra.run.dir={tmp_path}", *QUICK, "overwrite=true", bad)
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.count("error:") == 1 and "Traceback" not in out.stderr
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    assert after == before
