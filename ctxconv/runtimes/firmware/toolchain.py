"""The external tools the firmware backend runs, found on PATH or named by the error."""

from __future__ import annotations

import ctypes
import os
import shutil
import signal

ARM_PACKAGES = "gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm"
INSTALL = f"apt-get install -y {ARM_PACKAGES}"
PR_SET_PDEATHSIG = 1  # linux/prctl.h


class ToolMissing(RuntimeError):
    """A compiler or emulator is not installed; the message gives the install command."""


def find(tool: str) -> str:
    """Absolute path of ``tool``, else ToolMissing with the command that installs it."""
    path = shutil.which(tool)
    if path is None:
        hint = "install a C compiler (e.g. apt-get install -y gcc) or set CC" if tool in (
            "cc", "gcc", "clang") else f"install it with `{INSTALL}`"
        raise ToolMissing(f"{tool} not found: {hint}")
    return path


def host_cc() -> str:
    return find(os.environ.get("CC", "cc"))


def arm_tools() -> dict[str, str]:
    """arm-none-eabi-gcc, -size, -nm and qemu-system-arm."""
    return {t: find(t) for t in ("arm-none-eabi-gcc", "arm-none-eabi-size", "arm-none-eabi-nm",
                                 "qemu-system-arm")}


def missing_arm_tools() -> str | None:
    """None when the Arm toolchain and QEMU are installed, else why not (for test skips)."""
    try:
        arm_tools()
    except ToolMissing as exc:
        return str(exc)
    return None


def die_with_parent() -> None:
    """For ``subprocess``'s ``preexec_fn``: the child (an emulator) is killed when the
    process that started it ends, even by a signal (Linux ``PR_SET_PDEATHSIG``), so a
    worker ended by another's error leaves no firmware running. Elsewhere, nothing."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
