"""The generated C as an embedded engineer reads it: block constants named once, placement
hooks, identity (SPDX, version, model digest), documented preconditions, warning-clean."""

from __future__ import annotations

import hashlib
import importlib.metadata
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from c_bundles import as_block, bundle_of, random_images
from fw_graphs import add_graph, conv_graph, variant_graph

import ctxconv
from ctxconv.blockgraph.bundle import ExportBundle
from ctxconv.codegen.header import STACK_BYTES
from ctxconv.codegen.sources import input_table
from ctxconv.runtimes.firmware.build import build_arm
from ctxconv.runtimes.firmware.run import run_harness
from ctxconv.runtimes.firmware.targets import target_for
from ctxconv.runtimes.firmware.toolchain import missing_arm_tools
from ctxconv.sim.firmware_check import block_shapes
from ctxconv.sim.profiles import load_profile

needs_cc = pytest.mark.skipif(shutil.which("cc") is None,
                              reason="no C compiler: apt-get install -y gcc")
ARM_MISSING = missing_arm_tools()
needs_arm = pytest.mark.skipif(ARM_MISSING is not None, reason=str(ARM_MISSING))
WARNINGS = ("-std=c99", "-O2", "-Wall", "-Wextra", "-Wconversion", "-pedantic", "-Werror")
M4F = ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16")
def _train_builds(c_dir: Path) -> list[tuple[str, ...]]:
    """Inference only, and every block this library can train learning."""
    head = (c_dir / "ctxconv_model.h").read_text()
    mask = re.search(r"#define CTXCONV_TRAINABLE_BLOCKS (0x[0-9a-f]+)u", head).group(1)
    return [("-DCTXCONV_TRAIN_BLOCKS=0",), (f"-DCTXCONV_TRAIN_BLOCKS={mask}",
                                           "-ffp-contract=off")]


def _two_blocks(path: Path, **kw) -> ExportBundle:
    g0 = conv_graph(20, h=8, w=8, cin=1, cout=6)
    g1 = conv_graph(21, h=8, w=8, cin=6, cout=5, pool="MAX_POOL_2D")
    g0.tensors[g0.outputs[0]].quant = g1.tensors[g1.inputs[0]].quant
    return bundle_of([as_block(g0, "block0", 20), as_block(g1, "block1", 21)], path, **kw)


def _contextual(path: Path) -> ExportBundle:
    """conv block, then a FiLM block that reads the context; block 0 does not score."""
    g0 = conv_graph(22, h=8, w=8, cin=1, cout=4)
    film = variant_graph("film", 23, h=8, w=8, cin=4, cout=6)
    g0.tensors[g0.outputs[0]].quant = film.tensors[film.inputs[0]].quant
    b1 = as_block(film, "block1", 23)
    b1.inputs.append("context")
    b1.validate()
    return bundle_of([as_block(g0, "block0", 22), b1], path, contextual=(1,), unscored=(0,))


def _c(bundle: ExportBundle, name: str = "ctxconv_model.c") -> str:
    return (bundle.path / "c" / name).read_text()


def _prose(text: str) -> str:
    """Comment text as one line: the ``*`` of each comment line and the wrapping dropped."""
    return " ".join(" ".join(re.sub(r"^\s*\*(?!/)", "", ln) for ln in text.splitlines()).split())


def test_block_constants_are_named_once(tmp_path):
    """Score weights, zero points and arena offsets live in ctxconv_blocks only: the code
    after the table reads them from it."""
    bundle = _two_blocks(tmp_path)
    src = _c(bundle)
    table = src[src.index("const ctxconv_block_info ctxconv_blocks"):]
    table, code = table[: table.index("};")], table[table.index("};"):]
    for i in range(2):
        row = re.search(rf"\[{i}\] = \{{(.*?)\}}", table, re.S).group(1)
        fields = dict(re.findall(r"\.(\w+) = (-?\d+)", row))
        assert set(fields) >= {"score_weight", "score_zero_point", "score_offset",
                               "features_offset", "features_bytes"}
        assert int(fields["score_weight"]) > 0
        assert src.count(fields["score_weight"]) == 1, fields  # only in its row
    assert not re.search(r"\bA\(\d", code), code  # no arena offset as a literal
    assert "return INPUT_SLOT;" in code


def _objdump_sections(objdump: str, obj: Path) -> dict[str, str]:
    """symbol -> section of the objects in ``obj``."""
    out = subprocess.run([objdump, "-t", str(obj)], check=True, capture_output=True,
                         text=True).stdout
    syms = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[-3].startswith(".") and " O " in line:
            syms[parts[-1]] = parts[-3]
    return syms


def _placed(compiler: list[str], objdump: str, bundle: ExportBundle, tmp: Path,
            defines: tuple[str, ...]) -> dict[str, str]:
    obj = tmp / "model.o"
    subprocess.run([*compiler, "-std=c99", "-O2", *defines, "-c",
                    str(bundle.path / "c" / "ctxconv_model.c"), "-o", str(obj)], check=True)
    return _objdump_sections(objdump, obj)


PLACE = ("-DCTXCONV_WEIGHTS_ATTR=__attribute__((section(\".qspi\")))",
         "-DCTXCONV_ARENA_ATTR=__attribute__((section(\".sram2\")))")


def _check_placement(compiler: list[str], objdump: str, tmp_path: Path) -> None:
    add = as_block(add_graph(8, b_shape=(1, 1, 1, 3), b_constant=True), "block0", 8)
    bundle = bundle_of([add], tmp_path)  # conv-free: FC weights and a constant operand
    src = _c(bundle)
    arrays = re.findall(r"static const int\w+ (\w+)\[\d+\]", src)
    assert "input_table" in arrays and any(a.endswith("_b") for a in arrays)
    placed = _placed(compiler, objdump, bundle, tmp_path, PLACE)
    assert {placed[a] for a in arrays} == {".qspi"}, placed
    assert placed["arena"] == ".sram2"
    assert placed["ctxconv_blocks"] != ".qspi"  # the table is not a weight array
    default = _placed(compiler, objdump, bundle, tmp_path, ())
    assert not {".qspi", ".sram2"} & set(default.values()), default


@needs_arm
def test_weights_and_arena_go_to_the_sections_the_user_names_on_cortex_m(tmp_path):
    _check_placement(["arm-none-eabi-gcc", *M4F], "arm-none-eabi-objdump", tmp_path)


@needs_cc
@pytest.mark.skipif(shutil.which("objdump") is None, reason="no objdump (binutils)")
def test_weights_and_arena_go_to_the_sections_the_user_names_on_the_host(tmp_path):
    _check_placement(["cc"], "objdump", tmp_path)


def test_header_names_license_version_and_model(tmp_path):
    bundle = _two_blocks(tmp_path)
    head, src = _c(bundle, "ctxconv_model.h"), _c(bundle)
    spdx = "/* SPDX-License-Identifier: Apache-2.0 */"
    assert head.splitlines()[0] == spdx and src.splitlines()[0] == spdx
    version = re.search(r'#define CTXCONV_VERSION "([^"]+)"', head).group(1)
    assert version == ctxconv.__version__ == importlib.metadata.version("ctxconv")
    digest = re.search(r'#define CTXCONV_MODEL_SHA256 "([0-9a-f]{64})"', head).group(1)
    files = b"".join((bundle.path / f"{g.name}.tflite").read_bytes() for g in bundle.graphs)
    assert digest == hashlib.sha256(files).hexdigest()
    assert "cat block0.tflite block1.tflite | sha256sum" in head
    assert digest[:16] in _c(bundle, "README.md")


def test_real_export_header_names_its_tflite_files(digits_export):
    out = Path(digits_export["export_dir"])
    head = (out / "c" / "ctxconv_model.h").read_text()
    files = b"".join((out / b["files"]["tflite"]).read_bytes() for b in digits_export["blocks"])
    assert f'"{hashlib.sha256(files).hexdigest()}"' in head
    top = round(1 / digits_export["input"]["pixel_scale"])
    assert f"raw pixels 0..{top} " in _prose(head)  # digits: 0..16, not 0..255


def test_header_documents_modes_entry_points_input_and_unused_work(tmp_path):
    bundle = _contextual(tmp_path / "ctx")
    head, readme = _c(bundle, "ctxconv_model.h"), _prose(_c(bundle, "README.md"))
    doc = _prose(head[: head.index("*/", head.index("Modes:"))])
    head = _prose(head)
    assert re.search(r"ctxconv_classify_multipass: the blocks before block1 run once; "
                     r"block1's context-free ops run once, then per candidate class", doc)
    assert "onepass" not in doc  # the export has no onepass
    assert re.search(r"0 block0: .*score weight 0: ctxconv_classify skips its head", doc, re.S)
    assert re.search(r"1 block1: .*contextual; scores weighted \d+", doc)
    assert "the classify functions run block0 without the head" in readme
    for text in ("blocks must run in order", "input slot is", "until the next block runs"):
        assert text in head and text in readme, text
    assert f"#define CTXCONV_STACK_BYTES {STACK_BYTES}" in head
    # both modes of a context-free export, and its pixel range from the manifest
    flat = _two_blocks(tmp_path / "flat", pixel_scale=1 / 16)
    head = _prose(_c(flat, "ctxconv_model.h"))
    assert "ctxconv_classify_onepass: every block runs once" in head
    assert "ctxconv_classify_multipass: every block runs once" in head
    sat = int(np.nonzero((input_table(flat.manifest) == 127).any(axis=0))[0][0])
    assert 16 < sat < 255  # a 0..255 camera image would saturate the input
    assert (f"uint8 raw pixels 0..16 (pixel_scale 0.0625: the range the model was trained "
            f"on); from {sat} up, block 0's int8 input saturates") in head


def _compile(compiler: list[str], c_dir: Path, src: str, extra: tuple[str, ...],
             tmp: Path) -> None:
    proc = subprocess.run([*compiler, *WARNINGS, *extra, f"-I{c_dir}", "-c", str(c_dir / src),
                           "-o", str(tmp / "x.o")], capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(compiler)} {src}:\n{proc.stderr}"


def _warning_free(compilers: list[list[str]], tmp_path: Path) -> None:
    bundles = [_two_blocks(tmp_path / "a"), _contextual(tmp_path / "b"),
               bundle_of([as_block(variant_graph("l2", 18, h=5, w=3, cin=3, cout=4),
                                   "block0", 18)], tmp_path / "c"),
               bundle_of([as_block(add_graph(14, b_shape=(1, 1, 1, 3), b_constant=True,
                                             relu=True, kind="MUL"), "block0", 14)],
                         tmp_path / "d")]
    for bundle in bundles:
        c_dir = bundle.path / "c"
        for compiler in compilers:
            _compile(compiler, c_dir, "ctxconv_kernels.c", (), tmp_path)
            for flags in _train_builds(c_dir):
                for src in ("ctxconv_model.c", "ctxconv_train.c"):
                    _compile(compiler, c_dir, src, flags, tmp_path)


@needs_cc
def test_library_and_training_step_compile_warning_free_on_the_host(tmp_path):
    _warning_free([["cc"]], tmp_path)


@needs_arm
def test_library_and_training_step_compile_warning_free_on_cortex_m(tmp_path):
    """The SMLAD path (M4F, M7) and the plain C paths (CTXCONV_NO_DSP, an M0+)."""
    arm = "arm-none-eabi-gcc"
    _warning_free([[arm, *M4F], [arm, *M4F, "-DCTXCONV_NO_DSP"],
                   [arm, "-mcpu=cortex-m7", "-mthumb"], [arm, "-mcpu=cortex-m0plus", "-mthumb"]],
                  tmp_path)


@needs_arm
def test_measured_stack_stays_under_the_documented_bound(tmp_path):
    """The painted stack's high-water mark on the emulated Cortex-M4 (harness included)."""
    for name, bundle in (("ctx", _contextual(tmp_path / "ctx")),
                         ("flat", _two_blocks(tmp_path / "flat"))):
        work = tmp_path / f"{name}-fw"
        work.mkdir()
        profile = load_profile("nrf52840")
        modes = list(bundle.manifest["modes"])
        build = build_arm(bundle.path / "c", work, modes, target_for(profile), profile)
        got = run_harness(build.elf, random_images(bundle, 2, 0), work, block_shapes(bundle),
                          bundle.num_classes, modes, True, timeout=120,
                          target=target_for(profile))
        assert 0 < got.stack_used <= STACK_BYTES, (name, got.stack_used)
