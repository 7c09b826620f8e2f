"""How every ctxconv command reports a user error: one line, no traceback, non-zero exit.

A traceback is shown only when asked for (``--debug``, or ``CTXCONV_DEBUG=1`` in the
environment), so that a mistyped path reads as a message, not as a crash. Output paths
are checked before the work starts (``check_output_path``) and Ctrl-C ends a command
with one line and exit code 130 (``interruptible``).
"""

from __future__ import annotations

import functools
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

DEBUG_ENV = "CTXCONV_DEBUG"
DEBUG_HELP = f"show the full traceback of an error (also {DEBUG_ENV}=1)"
EXIT_INTERRUPTED = 130


def debug_enabled(flag: bool = False) -> bool:
    return flag or os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")


def report_error(exc: BaseException, code: int = 2, debug: bool = False) -> int:
    """Print ``error: <exc>`` to stderr and return ``code``; re-raise when debugging."""
    if debug_enabled(debug):
        raise exc
    print(f"error: {exc}", file=sys.stderr)
    return code


def check_output_path(path: str | os.PathLike | None, option: str) -> None:
    """Raise ValueError naming ``path`` unless a file can be written there (None: unused)."""
    if path is None:
        return
    target = Path(path)
    if target.is_dir():
        raise ValueError(f"{option} {path}: is a directory; give a file name")
    parent = target.parent
    if not parent.is_dir():
        raise ValueError(f"{option} {path}: folder {parent} does not exist")
    try:
        if target.exists():
            with open(target, "a"):
                pass
        else:
            fd, probe = tempfile.mkstemp(dir=parent, prefix=f".{target.name}.")
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        raise ValueError(f"{option} {path}: cannot be written ({exc.strerror or exc})") from None


def interruptible(main: Callable[..., int]) -> Callable[..., int]:
    """``main`` that answers Ctrl-C with one line, ``interrupted``, and exit code 130."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED

    return wrapper
