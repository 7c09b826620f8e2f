"""Build TFLite Micro with CMSIS-NN from a tflite-micro checkout, and the anchor's harness.

The library is built by TFLM's own Makefile (``TARGET=cortex_m_generic
TARGET_ARCH=cortex-m4+fp OPTIMIZED_KERNEL_DIR=cmsis_nn BUILD_TYPE=release``, every part at
-O2) into a build folder outside the checkout. The Makefile fetches its third-party code on
first use; this module never downloads: the checkout must already hold
``tensorflow/lite/micro/tools/make/downloads/`` (CMSIS, CMSIS-NN, flatbuffers, gemmlowp,
ruy, kissfft, pigweed at the commits its download scripts pin), so a missing part is
named before make starts. The harness (``tflm_harness.cc``) is compiled with the flags the
Makefile reports for the library and linked with the firmware harness's start-up code,
semihosting and SysTick counter (``platform_arm.c``), under the same linker script as the
generated C, with the block files as C arrays.

Filling ``downloads/`` without network, from git copies of the repositories, does what each
download script does: ``cmsis`` = CMSIS_6 and ``cmsis/Cortex_DFP`` = Cortex_DFP at the
commits of ``ext_libs/cmsis_download.sh``, ``cmsis_nn`` = CMSIS-NN at
``ext_libs/cmsis_nn_download.sh``'s, ``gemmlowp``, ``ruy``, ``flatbuffers`` and
``kissfft`` at ``third_party_downloads.inc``'s (``git archive COMMIT | tar -x -C DIR``), the
``BUILD`` files deleted, ``flatbuffers.patch`` and ``third_party/kissfft/kissfft.patch``
applied with ``patch -p1``; ``pigweed`` at ``pigweed_download.sh``'s commit with
``pigweed.patch`` (no pigweed source is compiled into the library).
"""

from __future__ import annotations

import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ctxconv.blockgraph.bundle import ExportBundle
from ctxconv.runtimes.firmware.build import CFLAGS, harness_dir, linker_script
from ctxconv.runtimes.firmware.targets import TARGETS, ArmTarget
from ctxconv.runtimes.firmware.toolchain import arm_tools, find

HERE = Path(__file__).resolve().parent
MAKEFILE = "tensorflow/lite/micro/tools/make/Makefile"
DOWNLOADS = "tensorflow/lite/micro/tools/make/downloads"
#: what TFLM's Makefile would otherwise try to download (it skips a folder that exists)
THIRD_PARTY = ("cmsis", "cmsis/Cortex_DFP", "cmsis_nn", "flatbuffers", "gemmlowp", "ruy",
               "kissfft", "pigweed")
TARGET = TARGETS["cortex-m4f"]  # -mcpu=cortex-m4 -mthumb -mfloat-abi=hard -mfpu=fpv4-sp-d16
OPT = "-O2"
MAKE_VARS = ("TARGET=cortex_m_generic", "TARGET_ARCH=cortex-m4+fp",
             "OPTIMIZED_KERNEL_DIR=cmsis_nn", "BUILD_TYPE=release", "FPU=fpv4-sp-d16",
             f"CORE_OPTIMIZATION_LEVEL={OPT}", f"KERNEL_OPTIMIZATION_LEVEL={OPT}",
             f"THIRD_PARTY_KERNEL_OPTIMIZATION_LEVEL={OPT}")
#: TFLM's MicroMutableOpResolver method for each builtin op a block file may hold
OP_ADDERS = {
    "CONV_2D": "AddConv2D", "DEPTHWISE_CONV_2D": "AddDepthwiseConv2D",
    "FULLY_CONNECTED": "AddFullyConnected", "MAX_POOL_2D": "AddMaxPool2D",
    "AVERAGE_POOL_2D": "AddAveragePool2D", "RESHAPE": "AddReshape", "MEAN": "AddMean",
    "ADD": "AddAdd", "MUL": "AddMul", "CONCATENATION": "AddConcatenation",
    "QUANTIZE": "AddQuantize", "DEQUANTIZE": "AddDequantize", "RELU": "AddRelu",
    "SOFTMAX": "AddSoftmax", "LOGISTIC": "AddLogistic",
}  # fmt: skip
#: the emulated board's memory for the TFLM image (mps2-an386: 4 MB at 0x0, 4 MB at 0x2...)
FLASH_BYTES, RAM_BYTES = 4 << 20, 2 << 20
ARENA_POOL_BYTES = 1 << 20  # the probe's arena, then the per-block and shared arenas in it
STACK_BYTES = 16384
#: sections counted as flash, for both images alike
FLASH_SECTIONS = (".vectors", ".text", ".rodata", ".ARM.exidx", ".init_array", ".data")
POOL_SYMBOL, HANDOFF_SYMBOL = "_ZL15tflm_arena_pool", "_ZL12tflm_handoff"


class TflmError(RuntimeError):
    """The TFLM checkout is missing or incomplete, or its build failed (one line)."""


@dataclass(frozen=True)
class MemoryBoard:
    """The linker's memory for the TFLM image (``Board`` for ``linker_script``)."""

    name: str = "mps2-an386"
    core: str = "cortex-m4f"
    flash_bytes: int = FLASH_BYTES
    sram_bytes: int = RAM_BYTES


@dataclass
class TflmImage:
    """The linked harness, what the ELF holds, and the build's facts."""

    elf: Path
    sections: dict[str, int]
    symbols: dict[str, tuple[str, int]]  # name -> (nm type, bytes)
    library: Path

    @property
    def flash_bytes(self) -> int:
        return sum(self.sections.get(k, 0) for k in FLASH_SECTIONS)

    @property
    def static_ram_bytes(self) -> int:
        """.data + .bss of the whole image."""
        return self.sections.get(".data", 0) + self.sections.get(".bss", 0)

    def symbol_bytes(self, name: str) -> int:
        return self.symbols.get(name, ("", 0))[1]


def check_checkout(tflm: str | Path | None) -> Path:
    """The tflite-micro checkout, or TflmError naming what is missing."""
    if not tflm:
        raise TflmError("no TFLM checkout given: pass --tflm PATH (a tflite-micro checkout "
                        f"with its third-party code in {DOWNLOADS}/)")
    root = Path(tflm).expanduser().resolve()
    if not (root / MAKEFILE).is_file():
        raise TflmError(f"--tflm {tflm}: not a tflite-micro checkout (no {MAKEFILE})")
    missing = [d for d in THIRD_PARTY if not (root / DOWNLOADS / d).is_dir()]
    if missing:
        raise TflmError(f"--tflm {tflm}: {DOWNLOADS}/ lacks {', '.join(missing)} (this build "
                        "never downloads: put them at the commits the download scripts pin)")
    return root


def _pins(text: str, pattern: str) -> list[str]:
    return re.findall(pattern, text)


def checkout_facts(root: Path) -> dict[str, Any]:
    """The checkout's commit (where it is a git checkout) and the third-party versions its
    download scripts pin (what ``downloads/`` should hold; the folders carry no version)."""
    make = root / "tensorflow/lite/micro/tools/make"
    proc = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                          text=True)
    rev = proc.stdout.strip() if proc.returncode == 0 else "unknown (not a git checkout)"
    pins: dict[str, str] = {}
    try:
        cmsis = _pins((make / "ext_libs/cmsis_download.sh").read_text(), r'ZIP_PREFIX="(\w+)"')
        nn = _pins((make / "ext_libs/cmsis_nn_download.sh").read_text(),
                   r'ZIP_PREFIX_NN="(\w+)"')
        inc = (make / "third_party_downloads.inc").read_text()
    except OSError:
        return {"tflite_micro": rev, "pins": pins}
    for key, found in (("cmsis", cmsis[:1]), ("cortex_dfp", cmsis[1:2]), ("cmsis_nn", nn[:1]),
                       ("flatbuffers", _pins(inc, r"flatbuffers/archive/refs/tags/([\w.]+)\.zip")),
                       ("gemmlowp", _pins(inc, r"gemmlowp/archive/(\w+)\.zip")),
                       ("ruy", _pins(inc, r"ruy/archive/(\w+)\.zip"))):
        if found:
            pins[key] = found[0]
    return {"tflite_micro": rev, "pins": pins}


def _run(cmd: list[str], what: str, cwd: Path | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-12:]
        raise TflmError(f"{what} failed: " + " | ".join(tail))
    return proc.stdout


def make_command(build_dir: Path, jobs: int) -> list[str]:
    return [find("make"), "-f", MAKEFILE, *MAKE_VARS,
            f"TARGET_TOOLCHAIN_ROOT={Path(find('arm-none-eabi-gcc')).parent}/",
            f"BASE_GENDIR={build_dir / 'gen'}", f"-j{jobs}"]


def build_library(tflm: Path, build_dir: Path, jobs: int = 2) -> Path:
    """``libtensorflow-microlite.a`` built by TFLM's Makefile into ``build_dir``."""
    _run([*make_command(build_dir, jobs), "microlite"], "TFLM's make microlite", cwd=tflm)
    libs = sorted((build_dir / "gen").glob("*/lib/libtensorflow-microlite.a"))
    if len(libs) != 1:
        raise TflmError(f"TFLM's make microlite left {len(libs)} libraries in {build_dir}")
    return libs[0]


def parse_make_vars(text: str, names: tuple[str, ...]) -> dict[str, list[str]]:
    """``NAME=value`` lines of ``make print-NAME`` -> words (shell quoting undone)."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep and name in names and name not in found:
            found[name] = shlex.split(value)
    missing = [n for n in names if n not in found]
    if missing:
        raise TflmError(f"TFLM's Makefile printed no {', '.join(missing)}")
    return found


def absolute_includes(words: list[str], root: Path) -> list[str]:
    """``-Ipath`` relative to the checkout made absolute (the harness compiles elsewhere)."""
    return [f"-I{root / w[2:]}" if w.startswith("-I") and not Path(w[2:]).is_absolute() else w
            for w in words]


def library_flags(tflm: Path, build_dir: Path) -> list[str]:
    """The C++ flags and include paths the Makefile compiles the library with."""
    out = _run([*make_command(build_dir, 1), "print-CXXFLAGS", "print-INCLUDES"],
               "TFLM's make print-CXXFLAGS", cwd=tflm)
    v = parse_make_vars(out, ("CXXFLAGS", "INCLUDES"))
    flags = [w for w in v["CXXFLAGS"] if w != "-MD"]
    return [*flags, OPT, *absolute_includes(v["INCLUDES"], tflm)]


def c_array(name: str, data: bytes) -> str:
    rows = [", ".join(f"0x{b:02x}" for b in data[i : i + 16]) for i in range(0, len(data), 16)]
    return (f"alignas(16) const unsigned char {name}[{len(data)}] = {{\n  "
            + ",\n  ".join(rows) + "\n};\n")


def model_ops(bundle: ExportBundle) -> list[str]:
    """The resolver's Add methods for every op kind the export's block files hold."""
    kinds = sorted({op.kind for g in bundle.graphs for op in g.ops})
    unknown = [k for k in kinds if k not in OP_ADDERS]
    if unknown:
        raise TflmError(f"ops without a TFLM resolver entry here: {', '.join(unknown)}")
    return [OP_ADDERS[k] for k in kinds]


def check_pipeline(bundle: ExportBundle) -> None:
    """The harness chains context-free blocks: features of b are the input of b+1."""
    if any(b["contextual"] for b in bundle.blocks):
        raise TflmError("contextual blocks (a context input) are not run by the TFLM anchor")
    for i, g in enumerate(bundle.graphs):
        if list(g.inputs) != ["features_in"]:
            raise TflmError(f"{g.name}: inputs {list(g.inputs)}, expected one, features_in")
        if i + 1 < len(bundle.graphs):
            nxt = bundle.graphs[i + 1].tensors["features_in"]
            if g.tensors["features"].nbytes != nxt.nbytes:
                raise TflmError(f"{g.name}: its features are not the next block's input")
            here = next(t for t in bundle.blocks[i]["outputs"] if t["name"] == "features")
            there = bundle.blocks[i + 1]["inputs"][0]
            if (here["scale"], here["zero_point"]) != (there["scale"], there["zero_point"]):
                raise TflmError(f"{g.name}: its features and the next block's input are "
                                "quantized differently")


def write_models(bundle: ExportBundle, out: Path, pool_bytes: int = ARENA_POOL_BYTES) -> None:
    """``tflm_models.h`` / ``tflm_models.cc``: the block files as C arrays and the sizes."""
    check_pipeline(bundle)
    graphs = bundle.graphs
    handoff = max(g.tensors[n].nbytes for g in graphs for n in ("features_in", "features"))
    feats = [list(g.outputs).index("features") for g in graphs]
    ops = model_ops(bundle)
    header = [
        "/* Generated by benchmarks/tflm_mcu/build.py from the export's block files. */",
        "#ifndef TFLM_MODELS_H", "#define TFLM_MODELS_H",
        f"#define TFLM_NUM_BLOCKS {len(graphs)}", f"#define TFLM_NUM_OPS {len(ops)}",
        "#define TFLM_OPS " + "".join(f"X({a})" for a in ops),
        f"#define TFLM_INPUT_BYTES {graphs[0].tensors['features_in'].nbytes}",
        f"#define TFLM_HANDOFF_BYTES {handoff}", f"#define TFLM_ARENA_POOL_BYTES {pool_bytes}",
        "extern const unsigned char *const tflm_models[TFLM_NUM_BLOCKS];",
        "extern const int tflm_features_output[TFLM_NUM_BLOCKS];", "#endif", ""]
    (out / "tflm_models.h").write_text("\n".join(header))
    body = ['#include "tflm_models.h"', ""]
    body += [c_array(f"tflm_block{i}", data) for i, data in enumerate(bundle.tflite)]
    body.append("const unsigned char *const tflm_models[TFLM_NUM_BLOCKS] = {"
                + ", ".join(f"tflm_block{i}" for i in range(len(graphs))) + "};")
    body.append("const int tflm_features_output[TFLM_NUM_BLOCKS] = {"
                + ", ".join(map(str, feats)) + "};\n")
    (out / "tflm_models.cc").write_text("\n".join(body))


def tflm_linker_script(target: ArmTarget = TARGET) -> str:
    """The generated C's linker script (``link.ld.in``) at this board's sizes, with a place
    for C++ constructor tables (the harness runs none; the check below says if any)."""
    text = linker_script(MemoryBoard(), STACK_BYTES, target)
    anchor = "    .ARM.exidx : { *(.ARM.exidx*) } > FLASH\n"
    if anchor not in text:
        raise TflmError("the firmware linker script changed: no .ARM.exidx line to follow")
    return text.replace(anchor, anchor + "    .init_array : { KEEP(*(.init_array*)) } > FLASH\n")


def elf_facts(elf: Path) -> tuple[dict[str, int], dict[str, tuple[str, int]]]:
    tools = arm_tools()
    sizes = _run([tools["arm-none-eabi-size"], "-A", str(elf)], "arm-none-eabi-size")
    sections = {p[0]: int(p[1]) for p in (ln.split() for ln in sizes.splitlines())
                if len(p) == 3 and p[0].startswith(".") and p[1].isdigit()}
    syms = {}
    for line in _run([tools["arm-none-eabi-nm"], "-S", str(elf)], "arm-none-eabi-nm").splitlines():
        parts = line.split()
        if len(parts) == 4:
            syms[parts[3]] = (parts[2], int(parts[1], 16))
    return sections, syms


def build_harness(bundle: ExportBundle, library: Path, flags: list[str], work: Path,
                  target: ArmTarget = TARGET) -> TflmImage:
    """Compile the harness and the models, link with the library and the platform."""
    tools = arm_tools()
    gcc = tools["arm-none-eabi-gcc"]
    gxx = str(Path(gcc).with_name("arm-none-eabi-g++"))
    h = harness_dir()
    write_models(bundle, work)
    objs = []
    for src in (HERE / "tflm_harness.cc", work / "tflm_models.cc"):
        obj = work / (src.stem + ".o")
        _run([gxx, *flags, "-Werror", f"-I{work}", f"-I{h}", "-c", str(src), "-o", str(obj)],
             f"compiling {src.name}")
        objs.append(obj)
    plat = work / "platform_arm.o"
    _run([gcc, *target.cflags, *CFLAGS, "-ffunction-sections", "-fdata-sections", f"-I{h}",
          "-c", str(h / "platform_arm.c"), "-o", str(plat)], "compiling platform_arm.c")
    objs.append(plat)
    script = work / "tflm.ld"
    script.write_text(tflm_linker_script(target))
    elf = work / "tflm.elf"
    _run([gxx, *target.cflags, "--specs=nano.specs", "--specs=nosys.specs", "-nostartfiles",
          "-T", str(script), "-Wl,--gc-sections", *map(str, objs), str(library), "-lm",
          "-o", str(elf)], "linking the TFLM harness")
    sections, syms = elf_facts(elf)
    if sections.get(".init_array", 0):
        raise TflmError("the TFLM image has C++ constructors to run, and the start-up code "
                        "runs none")
    return TflmImage(elf, sections, syms, library)


def encode_inputs(x: np.ndarray) -> bytes:
    """The harness's input file: int32 count, then the int8 inputs of block 0."""
    return (np.array([len(x)], "<i4").tobytes()
            + np.ascontiguousarray(x, np.int8).tobytes())
