"""Temporary work directories that a killed process does not leave behind for good.

Each directory's name carries the pid of the process that made it
(``<prefix><pid>-<random>``); making a new one first removes those of the same prefix
whose process is gone, so a run killed with SIGKILL (or a lost machine) leaves litter only
until the next run. A live process's directories are never touched. ``sweep_stale`` also
serves the other pid-named temporaries (``<prefix><pid>.<random>``, ``<prefix>old-<pid>``:
checkpoint writes and exports).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def pid_alive(pid: int) -> bool:
    """Whether a process with ``pid`` exists (one we may not signal counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_PID = re.compile(r"(?:old-)?(\d+)(?:[-.]|$)")


def owner_pid(path: Path, prefix: str) -> int | None:
    """The pid in a temporary's name, None when the name is not one of ours."""
    if not path.name.startswith(prefix):
        return None
    m = _PID.match(path.name[len(prefix):])
    return int(m.group(1)) if m else None


def sweep_stale(parent: Path, prefix: str) -> list[Path]:
    """Remove ``parent``'s temporaries (directories or files) of ``prefix`` whose process
    has ended; returns what was removed."""
    removed = []
    try:
        candidates = list(parent.glob(f"{prefix}*"))
    except OSError:
        return removed
    for path in candidates:
        pid = owner_pid(path, prefix)
        if pid is None or pid == os.getpid() or pid_alive(pid):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        if not path.exists() and not path.is_symlink():
            removed.append(path)
    return removed


def make_work_dir(prefix: str, parent: str | Path | None = None) -> Path:
    """A new work directory ``<parent>/<prefix><pid>-…`` after sweeping stale ones."""
    where = Path(parent) if parent is not None else Path(tempfile.gettempdir())
    sweep_stale(where, prefix)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=where))


@contextmanager
def work_directory(prefix: str, parent: str | Path | None = None) -> Iterator[Path]:
    """``make_work_dir``, removed again on exit (also on Ctrl-C and errors)."""
    path = make_work_dir(prefix, parent)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
