"""How every ctxconv command reports a user error: one line, no traceback, non-zero exit.

A traceback is shown only when asked for (``--debug``, or ``CTXCONV_DEBUG=1`` in the
environment), so that a mistyped path reads as a message, not as a crash.
"""

from __future__ import annotations

import os
import sys

DEBUG_ENV = "CTXCONV_DEBUG"
DEBUG_HELP = f"show the full traceback of an error (also {DEBUG_ENV}=1)"


def debug_enabled(flag: bool = False) -> bool:
    return flag or os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")


def report_error(exc: BaseException, code: int = 2, debug: bool = False) -> int:
    """Print ``error: <exc>`` to stderr and return ``code``; re-raise when debugging."""
    if debug_enabled(debug):
        raise exc
    print(f"error: {exc}", file=sys.stderr)
    return code
