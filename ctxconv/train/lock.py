"""One writer per run directory: an OS lock (``fcntl.flock``) held for the whole run.

The lock file ``.ctxconv-train.lock`` in the run directory names its holder (pid, host).
The kernel releases a ``flock`` when its process ends, however it ends, so a lock left by a
killed process is simply taken over; the file's text only serves the error message.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from pathlib import Path
from types import TracebackType

LOCK_NAME = ".ctxconv-train.lock"


class RunDirLockedError(RuntimeError):
    """Another live process trains (or resumes) in the same run directory."""


class RunDirLock:
    """``with RunDirLock(run_dir):`` holds the run directory's lock or raises
    RunDirLockedError naming the holder."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._holder(fd)
            os.close(fd)
            raise RunDirLockedError(
                f"{self.path.parent} is in use by another ctxconv-train ({holder}): wait for it "
                "to finish or stop it, or choose another hydra.run.dir"
            ) from None
        me = {"pid": os.getpid(), "host": socket.gethostname()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        self._fd = fd

    @staticmethod
    def _holder(fd: int) -> str:
        try:
            info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
            return f"pid {info['pid']} on host {info['host']}"
        except (ValueError, KeyError, TypeError, OSError):
            return "pid unknown"

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)  # no stale name for the next reader
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunDirLock:
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
