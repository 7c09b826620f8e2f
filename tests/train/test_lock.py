"""One writer per run directory: a second ctxconv-train on a held directory is refused."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from ctxconv.train.lock import LOCK_NAME, RunDirLock, RunDirLockedError
from ctxconv.workdirs import pid_alive

TRAIN = [sys.executable, "-m", "ctxconv.train.cli"]
ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
QUICK = ["model.blocks=[[1,4,3]]", "trainer.epochs=1", "data.max_train_samples=200",
         "trainer.progress=false", "trainer.device=cpu"]


def cli(*args):
    return subprocess.run([*TRAIN, *args], capture_output=True, text=True, timeout=300, env=ENV)


def wait_for(path: Path, proc: subprocess.Popen, seconds: float = 120) -> None:
    end = time.monotonic() + seconds
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < end, f"{path} did not appear"
        time.sleep(0.2)


def test_second_writer_is_refused_and_a_killed_holders_lock_taken_over(tmp_path):
    first = subprocess.Popen([*TRAIN, f"hydra.run.dir={tmp_path}", "trainer.epochs=500",
                              "data.max_train_samples=200", "trainer.progress=false",
                              "trainer.device=cpu"], env=ENV, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        wait_for(tmp_path / "checkpoint.pt", first)  # training, the lock held
        holder = json.loads((tmp_path / LOCK_NAME).read_text())
        assert holder == {"pid": first.pid, "host": socket.gethostname()}
        for args in (QUICK, ["resume=true"], [*QUICK, "overwrite=true"]):
            out = cli(f"hydra.run.dir={tmp_path}", *args)
            assert out.returncode == 2, out.stderr[-2000:]
            line = (f"error: {tmp_path} is in use by another ctxconv-train (pid {first.pid} on "
                    f"host {socket.gethostname()}): wait for it to finish or stop it")
            assert out.stderr.strip().splitlines() == [line + ", or choose another "
                                                              "hydra.run.dir"]
        assert first.poll() is None  # the holder trains on, undisturbed
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert not pid_alive(first.pid)
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == first.pid  # stale
    out = cli(f"hydra.run.dir={tmp_path}", *QUICK, "overwrite=true")
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "summary.json").is_file()


def test_lock_is_released_after_the_run(tmp_path):
    with RunDirLock(tmp_path):
        try:
            RunDirLock(tmp_path).acquire()
        except RunDirLockedError as exc:
            assert f"pid {os.getpid()} on host" in str(exc)
        else:
            raise AssertionError("a second lock in the same directory was granted")
    lock = RunDirLock(tmp_path)
    lock.acquire()
    lock.release()
