"""Which emulated Arm machine and compiler flags stand for each MCU profile's core."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class Board(Protocol):
    """What a firmware build needs to know of an MCU (``ctxconv.sim.profiles.McuProfile``
    is one): its name, core and memory sizes in bytes."""

    @property
    def name(self) -> str: ...
    @property
    def core(self) -> str: ...
    @property
    def flash_bytes(self) -> int: ...
    @property
    def sram_bytes(self) -> int: ...


class FirmwareError(RuntimeError):
    """The firmware could not be built or run; the message says what and where."""


@dataclass(frozen=True)
class ArmTarget:
    """A Cortex-M core: GCC flags and the QEMU MPS2 board that emulates it."""

    core: str
    cflags: tuple[str, ...]
    machine: str
    dsp: bool = True  # the DSP extension (SMLAD): the kernels' dual 16-bit MAC path
    flash_origin: int = 0x00000000  # where the board's QEMU model boots the image from
    ram_origin: int = 0x20000000

    @property
    def kernels(self) -> str:
        """Which of the library's kernel paths this core compiles."""
        return "SMLAD kernels" if self.dsp else "plain C kernels"

    @property
    def label(self) -> str:
        return f"{self.core} ({self.machine})"


TARGETS: dict[str, ArmTarget] = {
    "cortex-m4f": ArmTarget(
        "cortex-m4f", ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"),
        "mps2-an386"),
    "cortex-m7": ArmTarget(
        "cortex-m7", ("-mcpu=cortex-m7", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv5-d16"),
        "mps2-an500"),
    # ARMv6-M (RP2040): no DSP, no FPU; mps2-an385's Cortex-M3 runs the Thumb-1 code as is
    "cortex-m0plus": ArmTarget(
        "cortex-m0plus", ("-mcpu=cortex-m0plus", "-mthumb", "-mfloat-abi=soft"), "mps2-an385",
        dsp=False),
    # ARMv8-M mainline with DSP and FPU; mps2-an505 boots it in the secure world, whose
    # aliases of the board's SRAM hold code at 0x10000000 and data at 0x38000000
    "cortex-m33": ArmTarget(
        "cortex-m33", ("-mcpu=cortex-m33", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv5-sp-d16"),
        "mps2-an505", flash_origin=0x10000000, ram_origin=0x38000000),
}  # fmt: skip


def target_for(profile: Board) -> ArmTarget:
    """The emulated target of ``profile``; FirmwareError for cores that stay modelled."""
    try:
        return TARGETS[profile.core]
    except KeyError:
        raise FirmwareError(
            f"{profile.name}: its {profile.core} core has no emulated firmware target, so its "
            f"figures stay modelled (emulated cores: {', '.join(TARGETS)})") from None
