"""Compile a generated C library with the test harness: for the host, and for a Cortex-M.

The Cortex-M image is linked with a script whose RAM and flash are the MCU profile's own
sizes, so the linker refuses a model that does not fit. Sizes are read off the linked ELF:
every symbol the library defines (weights per block, kernels, the arena) with its size.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from ctxconv.runtimes.firmware.targets import ArmTarget, Board, FirmwareError
from ctxconv.runtimes.firmware.toolchain import arm_tools, host_cc

LIBRARY = ("ctxconv_model.c", "ctxconv_kernels.c")
HARNESS = ("harness.c",)
#: -Werror: the harness and the library build warning-free (the library also under
#: -Wconversion -pedantic, held by the tests); -Wconversion stays out of this build so that
#: an export written by an earlier version still builds.
CFLAGS = ("-std=c99", "-O2", "-Wall", "-Wextra", "-Werror")
#: Only for the library's own sources on the Cortex-M (the harness's vector table is not ISO C).
LIBRARY_FLAGS = ("-pedantic",)
#: The training harness: it drives the library's training API (``c/ctxconv_train.c``,
#: given as an extra source so that an export written before it still builds for
#: inference; float32 steps repeated bit for bit from ondevice/qas.py, so nothing may be
#: fused into a multiply-add).
TRAIN_HARNESS = ("train_harness.c",)
TRAIN_FLAGS = ("-ffp-contract=off",)
DEFAULT_STACK_BYTES = 8192
_OVERFLOW = re.compile(r"region [`']?(\w+)'? overflowed by (\d+) bytes")


class FirmwareDoesNotFit(FirmwareError):
    """The linker refused the image: a memory region of the MCU overflowed."""

    def __init__(self, message: str, overflows: dict[str, int]) -> None:
        super().__init__(message)
        self.overflows = overflows


@dataclass
class ArmBuild:
    """A linked Cortex-M image and what it holds."""

    elf: Path
    target: ArmTarget
    sections: dict[str, int]  # section -> bytes
    library_symbols: dict[str, tuple[str, int]]  # name -> (nm type, bytes), library only
    stack_bytes: int
    flash_bytes: int = field(init=False)
    ram_bytes: int = field(init=False)

    def __post_init__(self) -> None:
        s = self.sections
        self.flash_bytes = sum(s.get(k, 0) for k in (".vectors", ".text", ".rodata",
                                                     ".ARM.exidx", ".data"))
        self.ram_bytes = sum(s.get(k, 0) for k in (".data", ".bss", ".stack"))

    def library_bytes(self, prefix: str = "", kinds: str = "tTrRdD") -> int:
        """Bytes of library symbols whose name starts with ``prefix`` and nm type is in
        ``kinds`` (code and constants by default)."""
        return sum(size for name, (kind, size) in self.library_symbols.items()
                   if name.startswith(prefix) and kind in kinds)


def harness_dir() -> Path:
    with resources.as_file(resources.files("ctxconv.runtimes.firmware") / "harness") as p:
        return Path(p)


def _modes_define(modes: list[str]) -> str:
    return "-DCTXCONV_HARNESS_MODES=" + "".join(f"X({m})" for m in modes)


def _run(cmd: list[str], what: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        overflows = {m.group(1): int(m.group(2)) for m in _OVERFLOW.finditer(proc.stderr)}
        if overflows:
            raise FirmwareDoesNotFit(f"{what}: the linker refused the image: " + ", ".join(
                f"region {r} overflowed by {n} bytes" for r, n in overflows.items()), overflows)
        raise FirmwareError(f"{what} failed:\n{proc.stderr.strip()[-2000:]}")
    return proc


def _includes(sources: tuple[Path, ...]) -> list[str]:
    return [f"-I{d}" for d in dict.fromkeys(Path(p).parent for p in sources)]


def build_host(c_dir: Path, work: Path, modes: list[str], harness: tuple[str, ...] = HARNESS,
               defines: tuple[str, ...] = (), extra: tuple[Path, ...] = (),
               optimize: tuple[str, ...] = ()) -> Path:
    """The library + harness for this machine (plain C kernels); returns the executable.

    ``harness``: the harness sources (the inference harness, or ``TRAIN_HARNESS``);
    ``defines``: extra compiler flags (the training block's geometry); ``extra``: more
    library sources (the training step), their folders on the include path; ``optimize``:
    flags after the default ``-O2`` (e.g. ``-O3 -march=native`` for a checker that runs
    thousands of images; integer code, so the results are the same).
    """
    h = harness_dir()
    exe = work / "host_harness"
    _run([host_cc(), *CFLAGS, *optimize, "-pedantic", f"-I{c_dir}", f"-I{h}", *_includes(extra),
          _modes_define(modes), *defines, *(str(c_dir / f) for f in LIBRARY),
          *map(str, extra), *(str(h / f) for f in harness), str(h / "platform_host.c"),
          "-o", str(exe), "-lm"], "host build")
    return exe


def linker_script(profile: Board, stack_bytes: int, target: ArmTarget) -> str:
    """The image's memory: the profile's sizes at the addresses the target's board boots."""
    text = (harness_dir() / "link.ld.in").read_text()
    return (text.replace("@FLASH_ORIGIN@", f"0x{target.flash_origin:08X}")
            .replace("@RAM_ORIGIN@", f"0x{target.ram_origin:08X}")
            .replace("@FLASH_BYTES@", str(profile.flash_bytes))
            .replace("@RAM_BYTES@", str(profile.sram_bytes))
            .replace("@STACK_BYTES@", str(stack_bytes)))


def _symbols(nm: str, path: Path, sized: bool) -> dict[str, tuple[str, int]]:
    args = [nm, "-S", str(path)] if sized else [nm, "--defined-only", str(path)]
    out = _run(args, f"reading symbols of {path.name}").stdout
    syms = {}
    for line in out.splitlines():
        parts = line.split()
        if sized and len(parts) == 4:
            syms[parts[3]] = (parts[2], int(parts[1], 16))
        elif not sized and len(parts) == 3:
            syms[parts[2]] = (parts[1], 0)
    return syms


def build_arm(c_dir: Path, work: Path, modes: list[str], target: ArmTarget,
              profile: Board, stack_bytes: int = DEFAULT_STACK_BYTES,
              harness: tuple[str, ...] = HARNESS, defines: tuple[str, ...] = (),
              extra: tuple[Path, ...] = ()) -> ArmBuild:
    """Cross-compile the library + harness for ``target`` within ``profile``'s memory.

    ``extra``: more library sources (the training step); their symbols count with the
    library's.
    """
    tools = arm_tools()
    gcc, h = tools["arm-none-eabi-gcc"], harness_dir()
    what = f"Cortex-M build for {profile.name} ({target.core})"
    flags = [*target.cflags, *CFLAGS, "-ffunction-sections", "-fdata-sections",
             f"-I{c_dir}", f"-I{h}", *_includes(extra)]
    objs = []
    library_sources = [*(c_dir / f for f in LIBRARY), *extra]
    for i, src in enumerate([*library_sources, *(h / f for f in harness),
                             h / "platform_arm.c"]):
        obj = work / (src.stem + ".o")
        strict = LIBRARY_FLAGS if i < len(library_sources) else ()
        _run([gcc, *flags, *strict, _modes_define(modes), *defines, "-c", str(src), "-o",
              str(obj)], what)
        objs.append(obj)
    script = work / f"{profile.name}.ld"
    script.write_text(linker_script(profile, stack_bytes, target))
    elf = work / "firmware.elf"
    _run([gcc, *target.cflags, "--specs=nano.specs", "--specs=nosys.specs", "-nostartfiles",
          "-T", str(script), "-Wl,--gc-sections", *map(str, objs), "-o", str(elf), "-lm"], what)
    sizes = _run([tools["arm-none-eabi-size"], "-A", str(elf)], what).stdout
    sections = {p[0]: int(p[1]) for p in (ln.split() for ln in sizes.splitlines())
                if len(p) == 3 and p[0].startswith(".") and p[1].isdigit()}
    library = set()
    for obj in objs[: len(library_sources)]:
        library |= set(_symbols(tools["arm-none-eabi-nm"], obj, sized=False))
    linked = _symbols(tools["arm-none-eabi-nm"], elf, sized=True)
    return ArmBuild(elf, target, sections, {n: v for n, v in linked.items() if n in library},
                    stack_bytes)
