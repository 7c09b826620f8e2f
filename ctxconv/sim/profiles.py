"""MCU profiles: memory sizes, runtime reservations and a cycle cost model per chip.

Profiles are YAML files. The packaged ones live in ``ctxconv/sim/mcu/`` (read
through importlib.resources, so they work from a wheel); users add their own in the
directory named by ``CTXCONV_MCU_DIR`` (same file format, same-name files override
packaged ones) or pass a path to a YAML file. Every number carries a ``sources`` entry.
"""

from __future__ import annotations

import difflib
import math
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ctxconv.memory.tflm import ScratchModel

ENV_DIR = "CTXCONV_MCU_DIR"
_PACKAGE = "ctxconv.sim"
_SUBDIR = "mcu"
#: Default float32 cost relative to the int8 conv cost when a profile gives none.
FP32_MAC_FACTOR = 2.0


@dataclass(frozen=True)
class CostModel:
    """Cycle cost of the kernel library on this core."""

    conv_cycles_per_mac: float
    fc_cycles_per_mac: float
    pool_cycles_per_element: float  # per input tap of a pooling window
    add_cycles_per_element: float
    op_overhead_cycles: float  # per op invocation
    #: Optional: cycles per float32 multiply-accumulate of on-device training kernels. None:
    #: ``FP32_MAC_FACTOR`` x the int8 conv figure (the int8 SIMD kernels retire two MACs
    #: per instruction from packed bytes; float32 retires one MAC per FMA and loads four
    #: bytes per operand).
    fp32_cycles_per_mac: float | None = None

    @property
    def fp32_mac_cycles(self) -> float:
        """Cycles per float32 MAC: the profile's figure, else the documented default."""
        if self.fp32_cycles_per_mac is not None:
            return self.fp32_cycles_per_mac
        return FP32_MAC_FACTOR * self.conv_cycles_per_mac


@dataclass(frozen=True)
class McuProfile:
    """One microcontroller and the TFLM build that runs on it."""

    name: str
    core: str
    clock_hz: int
    sram_bytes: int
    flash_bytes: int
    kernel_library: str
    reserved_sram_bytes: int  # stack, runtime globals, drivers
    reserved_flash_bytes: int  # TFLM + kernels + application code
    cost: CostModel
    scratch: ScratchModel = field(default_factory=ScratchModel)
    sources: dict[str, str] = field(default_factory=dict)
    description: str = ""
    max_arena_bytes: int | None = None  # largest contiguous SRAM block for the arena
    active_power_mw: float | None = None
    path: str | None = None

    @property
    def available_sram_bytes(self) -> int:
        """SRAM left for the model after the runtime's reservation."""
        return self.sram_bytes - self.reserved_sram_bytes

    @property
    def available_flash_bytes(self) -> int:
        """Flash left for model files after the runtime's code."""
        return self.flash_bytes - self.reserved_flash_bytes

    @property
    def arena_limit_bytes(self) -> int:
        """Largest tensor arena: available SRAM, capped by the largest contiguous block."""
        if self.max_arena_bytes is None:
            return self.available_sram_bytes
        return min(self.available_sram_bytes, self.max_arena_bytes)

    def seconds(self, cycles: float) -> float:
        return float(cycles) / self.clock_hz

    def energy_mj(self, cycles: float) -> float | None:
        """Energy of ``cycles`` at the active power (mJ), or None if not given."""
        if self.active_power_mw is None:
            return None
        return self.active_power_mw * self.seconds(cycles)


# ------------------------------------------------------------------------- parsing


def _field(data: dict[str, Any], key: str, src: str, prefix: str = "") -> Any:
    if not isinstance(data, dict) or key not in data or data[key] is None:
        raise ValueError(f"MCU profile {src}: field {prefix + key!r} is missing")
    return data[key]


def _number(value: Any, key: str, src: str, integer: bool, positive: bool = True) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"MCU profile {src}: field {key!r} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"MCU profile {src}: field {key!r} must be a finite number, got "
                         f"{value!r}")
    if integer and float(value) != int(value):
        raise ValueError(f"MCU profile {src}: field {key!r} must be an integer, got {value!r}")
    if value < 0 or (positive and value == 0):
        raise ValueError(f"MCU profile {src}: field {key!r} must be positive, got {value!r}")
    return int(value) if integer else float(value)


def _section(data: dict[str, Any], key: str, src: str, required: bool) -> dict[str, Any]:
    sec = data.get(key)
    if sec is None:
        if required:
            raise ValueError(f"MCU profile {src}: field {key!r} is missing")
        return {}
    if not isinstance(sec, dict):
        raise ValueError(f"MCU profile {src}: field {key!r} must be a mapping")
    return sec


def profile_from_dict(data: Any, src: str = "<dict>") -> McuProfile:
    """Build and validate a profile from parsed YAML; ValueError names the bad field."""
    if not isinstance(data, dict):
        raise ValueError(f"MCU profile {src}: expected a mapping at the top level")

    def num(sec: dict[str, Any], key: str, prefix: str, integer: bool, positive: bool = True):
        return _number(_field(sec, key, src, prefix), prefix + key, src, integer, positive)

    name = _field(data, "name", src)
    if not isinstance(name, str) or not name:
        raise ValueError(f"MCU profile {src}: field 'name' must be a non-empty string")
    reserved = _section(data, "reserved", src, required=True)
    cost = _section(data, "cost", src, required=True)
    scratch = _section(data, "scratch", src, required=False)
    power = _section(data, "power", src, required=False)
    sources = _section(data, "sources", src, required=True)
    p = McuProfile(
        name=name,
        core=str(_field(data, "core", src)),
        clock_hz=num(data, "clock_hz", "", True),
        sram_bytes=num(data, "sram_bytes", "", True),
        flash_bytes=num(data, "flash_bytes", "", True),
        kernel_library=str(_field(data, "kernel_library", src)),
        reserved_sram_bytes=num(reserved, "sram_bytes", "reserved.", True, False),
        reserved_flash_bytes=num(reserved, "flash_bytes", "reserved.", True, False),
        cost=CostModel(
            **{
                k: num(cost, k, "cost.", False)
                for k in (
                    "conv_cycles_per_mac",
                    "fc_cycles_per_mac",
                    "pool_cycles_per_element",
                    "add_cycles_per_element",
                    "op_overhead_cycles",
                )
            },
            fp32_cycles_per_mac=(
                None
                if cost.get("fp32_cycles_per_mac") is None
                else _number(cost["fp32_cycles_per_mac"], "cost.fp32_cycles_per_mac", src, False)
            ),
        ),
        scratch=ScratchModel(
            **{
                k: _number(scratch[k], "scratch." + k, src, False, False)
                for k in ScratchModel.__dataclass_fields__
                if scratch.get(k) is not None
            }
        ),
        sources={str(k): str(v) for k, v in sources.items()},
        description=str(data.get("description", "")),
        max_arena_bytes=(
            None
            if data.get("max_arena_bytes") is None
            else _number(data["max_arena_bytes"], "max_arena_bytes", src, True)
        ),
        active_power_mw=(
            None
            if power.get("active_mw") is None
            else _number(power["active_mw"], "power.active_mw", src, False)
        ),
        path=None if src.startswith("<") else src,
    )
    unknown = set(scratch) - set(ScratchModel.__dataclass_fields__)
    if unknown:
        raise ValueError(f"MCU profile {src}: unknown field(s) scratch.{sorted(unknown)}")
    if p.reserved_sram_bytes >= p.sram_bytes:
        raise ValueError(f"MCU profile {src}: field 'reserved.sram_bytes' leaves no SRAM")
    if p.reserved_flash_bytes >= p.flash_bytes:
        raise ValueError(f"MCU profile {src}: field 'reserved.flash_bytes' leaves no flash")
    return p


def _parse(entry: Any, src: str) -> McuProfile:
    """Read, parse and validate the YAML file ``entry`` (a Path or a Traversable)."""
    try:
        text = entry.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"MCU profile {src}: not UTF-8 text (byte {exc.start}: "
                         f"{exc.reason})") from None
    except OSError as exc:
        raise ValueError(f"MCU profile {src}: cannot be read ({exc.strerror or exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"MCU profile {src}: malformed YAML: {exc}") from None
    return profile_from_dict(data, src)


# ------------------------------------------------------------------------ discovery


def _packaged() -> dict[str, tuple[str, Any]]:
    """name (file stem) -> (display path, Traversable) of the packaged profiles."""
    root = resources.files(_PACKAGE).joinpath(_SUBDIR)
    out = {}
    for entry in root.iterdir():
        if entry.name.endswith((".yaml", ".yml")):
            out[entry.name.rsplit(".", 1)[0]] = (f"{_PACKAGE}/{_SUBDIR}/{entry.name}", entry)
    return out


def _user() -> dict[str, tuple[str, Any]]:
    """Profiles in the ``CTXCONV_MCU_DIR`` directory (empty when unset)."""
    d = os.environ.get(ENV_DIR)
    if not d:
        return {}
    path = Path(d)
    if not path.is_dir():
        raise ValueError(f"{ENV_DIR}={d!r} is not a directory (it names the folder of your "
                         "own MCU profiles; unset it to use the packaged ones)")
    return {
        p.stem: (str(p), p)
        for p in sorted(path.iterdir())
        if p.suffix in (".yaml", ".yml") and p.is_file()
    }


def _all() -> dict[str, tuple[str, Any]]:
    return {**_packaged(), **_user()}


def list_profiles() -> list[str]:
    """Names of all known profiles: packaged plus ``CTXCONV_MCU_DIR``."""
    return sorted(_all())


def profiles_help() -> str:
    """The known profile names for a ``--help`` text (never raises: a bad
    ``CTXCONV_MCU_DIR`` is reported when a profile is loaded)."""
    try:
        return ", ".join(list_profiles())
    except ValueError:
        return ", ".join(sorted(_packaged())) + f" (${ENV_DIR} is not a directory)"


def load_profile(name_or_path: str | os.PathLike) -> McuProfile:
    """Load a profile by name (user directory first, then packaged) or from a YAML path.

    Unknown names raise ValueError listing the available profiles; malformed files raise
    ValueError naming the file and the field.
    """
    text_arg = os.fspath(name_or_path)
    path = Path(text_arg)
    if path.suffix in (".yaml", ".yml") or os.sep in text_arg:
        if not path.is_file():
            raise ValueError(f"MCU profile file {text_arg!r} does not exist")
        return _parse(path, str(path))
    known = _all()
    if text_arg not in known:
        close = difflib.get_close_matches(text_arg, known, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ValueError(
            f"unknown MCU profile {text_arg!r}; {hint}available: {', '.join(sorted(known))} "
            f"(add your own YAML files to ${ENV_DIR} or pass a path)"
        )
    src, entry = known[text_arg]
    return _parse(entry, src)
