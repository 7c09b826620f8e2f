"""The external tools the firmware backend runs, found on PATH or named by the error."""

from __future__ import annotations

import os
import shutil

ARM_PACKAGES = "gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm"
INSTALL = f"apt-get install -y {ARM_PACKAGES}"


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
