"""Temporaries of a killed checkpoint write or export are removed by the next run."""

import os
import shutil
import subprocess

from tiny_runs import small_app

from ctxconv.export.exporter import ExportOptions, export_run
from ctxconv.train.run import train_run


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_stale_checkpoint_temporaries_are_removed_live_ones_kept(tmp_path):
    stale = tmp_path / f".checkpoint.pt.{dead_pid()}.abc.tmp"
    live = tmp_path / f".checkpoint.pt.{os.getpid()}.xyz.tmp"
    for p in (stale, live):
        p.write_bytes(b"half")
    train_run(small_app(epochs=1), tmp_path)
    assert not stale.exists() and live.exists()


def test_stale_export_temporaries_are_removed_live_ones_kept(digits_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(digits_run, run, ignore=shutil.ignore_patterns("export*"))
    pid = dead_pid()
    stale = [run / f".export.{pid}.abcd", run / f".export.old-{pid}"]
    live = run / f".export.{os.getpid()}.q"
    for d in (*stale, live):
        d.mkdir()
        (d / "block0.onnx").write_bytes(b"x")
    export_run(run, run / "export", ExportOptions(verify_samples=20))
    assert not any(d.exists() for d in stale) and live.exists()
