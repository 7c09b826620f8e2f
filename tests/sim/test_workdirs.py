"""Work directories: a killed run's litter goes on the next run, a live run's stays."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ctxconv.workdirs import make_work_dir, owner_pid, sweep_stale, work_directory


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_dead_process_s_directory_is_swept_a_live_one_kept(tmp_path):
    dead = tmp_path / f"ctxconv-fw-{_dead_pid()}-abc"
    live = tmp_path / f"ctxconv-fw-{os.getppid()}-def"
    other = tmp_path / "ctxconv-fw-notapid"
    for d in (dead, live, other):
        d.mkdir()
        (d / "firmware.elf").write_bytes(b"x")
    with work_directory("ctxconv-fw-", tmp_path) as work:
        assert work.name.startswith(f"ctxconv-fw-{os.getpid()}-") and work.is_dir()
        assert not dead.exists() and live.exists() and other.exists()
    assert not work.exists()  # removed on exit


def test_removed_on_ctrl_c(tmp_path):
    with pytest.raises(KeyboardInterrupt), work_directory("ctxconv-fw-", tmp_path) as work:
        raise KeyboardInterrupt
    assert not work.exists()


def test_names_and_sweep_of_the_generated_c_staging(tmp_path):
    path = make_work_dir(".c.new-", tmp_path)
    assert owner_pid(path, ".c.new-") == os.getpid()
    assert sweep_stale(tmp_path, ".c.new-") == []  # our own: kept
    stale = tmp_path / f".c.old-{_dead_pid()}-"
    stale.mkdir()
    assert sweep_stale(tmp_path, ".c.old-") == [stale]
