"""The generated C library against the simulator's reference kernels (bit for bit).

Host builds run everywhere a C compiler exists; the Cortex-M builds (the SMLAD path) need
the Arm toolchain and QEMU and skip with the command that installs them.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from c_bundles import as_block, bundle_of, random_images
from fw_graphs import add_graph, chain_graph, conv_graph, fc_graph, mean_graph, variant_graph

from ctxconv.blockgraph.ir import Quant
from ctxconv.codegen import CGenerationError, write_c_library
from ctxconv.runtimes.firmware.run import BlockShape, run_harness
from ctxconv.runtimes.firmware.targets import TARGETS, FirmwareError
from ctxconv.runtimes.firmware.toolchain import missing_arm_tools
from ctxconv.sim.firmware_check import check_emulated, check_host
from ctxconv.sim.profiles import load_profile

needs_cc = pytest.mark.skipif(shutil.which("cc") is None,
                              reason="no C compiler: apt-get install -y gcc")
ARM_MISSING = missing_arm_tools()
needs_arm = pytest.mark.skipif(ARM_MISSING is not None, reason=str(ARM_MISSING))


def _graphs() -> list:
    """Every kernel and parameter path of the C library at least once."""
    return [
        conv_graph(1, k=(3, 3), stride=(1, 1), padding="SAME", cin=1, cout=7),  # odd cout, K=9
        conv_graph(2, k=(5, 3), stride=(2, 2), padding="VALID", cin=3, cout=4, relu=False),
        conv_graph(3, k=(1, 1), cin=4, cout=6, pool="MAX_POOL_2D"),  # in-place pool
        conv_graph(4, h=9, w=9, cin=2, cout=5, pool="AVERAGE_POOL_2D", pool_filter=(3, 3),
                   pool_stride=(2, 2), pool_padding="SAME"),
        conv_graph(5, cin=3, cout=3, per_channel=False, pool="MAX_POOL_2D",
                   pool_filter=(3, 2), pool_stride=(1, 2), pool_padding="SAME"),
        fc_graph(6, shape=(1, 3, 3, 3), dout=7),  # n = 27: not a multiple of 4
        fc_graph(7, shape=(1, 2, 2, 4), dout=5, relu=True, per_channel=True),
        add_graph(8, b_shape=(1, 1, 1, 3), b_constant=True),  # broadcast, in place
        add_graph(9, b_shape=(1, 5, 4, 3), b_constant=True, relu=True),
        *(chain_graph(10 + i, head=False) for i in range(4)),
        add_graph(14, b_shape=(1, 1, 1, 3), b_constant=True, relu=True, kind="MUL"),  # FiLM
        add_graph(15, b_shape=(1, 5, 4, 3), b_constant=True, kind="MUL"),
        mean_graph(16),  # (1, 4, 4, 6) -> (1,)
        mean_graph(17, shape=(1, 3, 5, 60), axes=(2, 3), keep_dims=True),  # (1, 3, 1, 1)
        variant_graph("l2", 18, h=5, w=3, cin=3, cout=4),  # L2 over 45 values, then a conv
        variant_graph("l2", 19, h=1, w=1, cin=2, cout=2),
    ]


CASES = _graphs()


@needs_cc
@pytest.mark.parametrize("index", range(len(CASES)))
def test_host_build_is_bit_exact_with_the_reference_kernels(index, tmp_path):
    bundle = bundle_of([as_block(CASES[index], "block0", index)], tmp_path)
    raw = random_images(bundle, 24, index)
    report, _ = check_host(bundle, tmp_path / "c", raw, np.zeros(24, np.int64), tmp_path)
    assert report["bit_exact"], report
    assert report["blocks"][0] == {"features_equal": 1.0, "scores_equal": 1.0}


@needs_cc
def test_two_blocks_share_one_arena_and_stay_exact(tmp_path):
    """Block 1 reads block 0's features in place; its pool may overwrite them."""
    g0 = conv_graph(20, h=8, w=8, cin=1, cout=6)
    g1 = conv_graph(21, h=8, w=8, cin=6, cout=5, pool="MAX_POOL_2D")
    g0.tensors[g0.outputs[0]].quant = g1.tensors[g1.inputs[0]].quant  # one tensor, one quant
    first, second = as_block(g0, "block0", 20), as_block(g1, "block1", 21)
    bundle = bundle_of([first, second], tmp_path)
    assert "one static arena" in (tmp_path / "c" / "README.md").read_text()
    report, _ = check_host(bundle, tmp_path / "c", random_images(bundle, 16, 0),
                           np.zeros(16, np.int64), tmp_path)
    assert report["bit_exact"], report


@needs_cc
def test_real_export_c_matches_every_test_vector(digits_export, tmp_path):
    """The digits export's own C library on all of its test vectors: outputs and top-1."""
    from ctxconv.blockgraph.bundle import load_export

    bundle = load_export(digits_export["export_dir"])
    raw, labels = bundle.test_vectors()
    report, _ = check_host(bundle, bundle.path / "c", raw, labels, tmp_path)
    assert report["images"] == digits_export["test_vectors"]["count"]
    assert report["bit_exact"], report
    for mode, m in report["modes"].items():
        assert m["scores_equal"] == m["top1_equal"] == 1.0
        assert m["accuracy"] == pytest.approx(digits_export["accuracy"]["int8"][mode], abs=1e-9)


@needs_cc
def test_contextual_block_runs_once_per_class(tmp_path):
    """A contextual last block (context FC + broadcast ADD) through the C multipass."""
    from tiny_runs import train_tiny

    from ctxconv.blockgraph.bundle import load_export
    from ctxconv.export.exporter import ExportOptions, export_run

    run = train_tiny(tmp_path / "run", epochs=1, contextual=[False, True], injection="bias")
    # onnxruntime may differ by 2 LSB after the chained requantizations (see test_export)
    manifest = export_run(run, run / "export",
                          ExportOptions(verify_samples=20, test_samples=60, max_lsb=2))
    assert manifest["modes"] == ["multipass"]
    bundle = load_export(run / "export")
    raw, labels = bundle.test_vectors()
    report, got = check_host(bundle, bundle.path / "c", raw, labels, tmp_path)
    assert report["bit_exact"], report
    assert got.features[1].shape[1] == bundle.num_classes  # one pass per candidate context
    # multipass shares the context-free part: the conv of the image runs once, before the loop
    src = (bundle.path / "c" / "ctxconv_model.c").read_text()
    shared = src[src.index("static void block1_shared(int32_t head)"):]
    shared = shared[: shared.index("\n}\n")]
    assert "ctxconv_conv_s8" in shared and "ctxconv_add_s8" not in shared
    multipass = src[src.index("void ctxconv_classify_multipass"):]
    loop = multipass.rindex("for (int32_t k = 0")  # the candidate loop of block 1
    assert multipass.index("block1_shared(1);") < loop
    assert loop < multipass.index("block1_per_context(context_buffer, 1);")


def test_generated_code_refuses_what_it_cannot_express(tmp_path):
    graph = as_block(conv_graph(30), "block0", 30)
    bundle = bundle_of([graph], tmp_path)
    bad = bundle.manifest | {"int8": False}
    with pytest.raises(CGenerationError, match="full-integer int8"):
        write_c_library(bad, [graph], tmp_path / "x")
    graph.ops[0].kind = "DEPTHWISE_CONV_2D"
    with pytest.raises(CGenerationError, match="block0: op DEPTHWISE_CONV_2D has no C kernel"):
        write_c_library(bundle.manifest, [graph], tmp_path / "y")
    big = as_block(conv_graph(31, cin=64, cout=2), "block0", 31)
    big.tensors["b"].data = np.full(2, 2**31 - 1, np.int32)
    with pytest.raises(CGenerationError, match="accumulator can reach .* beyond int32"):
        write_c_library(bundle.manifest, [big], tmp_path / "z")
    mul = as_block(add_graph(32, b_shape=(1, 5, 1, 3), b_constant=True, kind="MUL"), "block0", 32)
    with pytest.raises(CGenerationError, match=r"block0: MUL \(1, 5, 4, 3\) \* \(1, 5, 1, 3\) -> "
                                               r"\(1, 5, 4, 3\): the C kernel broadcasts only a "
                                               "trailing block"):
        write_c_library(bundle.manifest, [mul], tmp_path / "m")
    mean = as_block(mean_graph(33, axes=(1,), keep_dims=True), "block0", 33)
    with pytest.raises(CGenerationError, match=r"block0: MEAN over axes \(1,\) of \(1, 4, 4, 6\): "
                                               "the C kernel reduces trailing axes only"):
        write_c_library(bundle.manifest, [mean], tmp_path / "n")
    l2 = as_block(variant_graph("l2", 34), "block0", 34)
    l2.tensors["unit"].quant = Quant.per_tensor(1 / 64, 0)
    with pytest.raises(CGenerationError, match="block 'block0' op L2_NORMALIZATION -> 'unit': "
                                               "output must be int8 scale 1/128, zero point 0"):
        write_c_library(bundle.manifest, [l2], tmp_path / "l")


@needs_cc
def test_harness_errors_name_the_problem(tmp_path):
    bundle = bundle_of([as_block(conv_graph(40), "block0", 40)], tmp_path)
    from ctxconv.runtimes.firmware.build import build_host

    exe = build_host(tmp_path / "c", tmp_path, ["multipass"])
    shapes = [BlockShape(1, bundle.graphs[0].tensors["features"].nbytes, 3)]
    raw = random_images(bundle, 2, 0)
    # a truncated input file: the harness reports it and exits non-zero
    (tmp_path / "inputs.bin").write_bytes(b"\x05\x00")
    proc = subprocess.run([str(exe), "inputs.bin", "outputs.bin"], cwd=tmp_path,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "cannot open or read the input file" in proc.stdout
    with pytest.raises(FirmwareError, match="harness output has .* bytes, expected"):
        run_harness(exe, raw, tmp_path, shapes, 3, ["multipass"], True, timeout=30)


@needs_arm
def test_every_emulated_core_builds_bit_exact(tmp_path):
    """The SMLAD kernels on the emulated M4 (nRF52840), M7 (STM32F746) and M33 (nRF5340),
    the plain C ones on the M0+ (RP2040, ARMv6-M: no DSP, no FPU), against the reference
    kernels and the real TFLM interpreter."""
    blocks = [as_block(g, "block0", i) for i, g in enumerate(CASES[:1])]
    assert sorted(TARGETS) == ["cortex-m0plus", "cortex-m33", "cortex-m4f", "cortex-m7"]
    for profile in ("nrf52840", "stm32f746", "nrf5340", "rp2040"):
        for i, graph in enumerate([*blocks, *(as_block(g, "block0", 50 + j)
                                              for j, g in enumerate(CASES[1:]))]):
            work = tmp_path / f"{profile}_{i}"
            work.mkdir()
            bundle = bundle_of([graph], work)
            raw = random_images(bundle, 3, i)
            rep = check_emulated(bundle, work / "c", load_profile(profile), None, raw,
                                 np.zeros(3, np.int64), work)
            assert rep["bit_exact"] and rep["bit_exact_vs_tflm"], (profile, i, rep)


@needs_arm
def test_conv_and_pool_paths_of_the_m4_agree_and_the_assembly_is_fastest(tmp_path, monkeypatch):
    """The M4's three kernel paths on one block: the LDRD/SMLAD assembly loop (odd group
    counts, a last lone pixel and an odd last channel included), the C intrinsics loop
    (CTXCONV_NO_ASM) and plain C (CTXCONV_NO_DSP); four-lane and scalar max and average
    pooling (average: windows cut by the padding)."""
    import ctxconv.runtimes.firmware.build as build
    from ctxconv.sim.fit import plan_on

    graphs = [conv_graph(70, h=7, w=7, cin=12, cout=9, pool="MAX_POOL_2D"),  # 27 groups
              conv_graph(71, h=5, w=5, cin=16, cout=6),  # 36 groups, 25 pixels
              conv_graph(72, h=9, w=9, cin=4, cout=10, pool="AVERAGE_POOL_2D",
                         pool_filter=(3, 3), pool_stride=(2, 2), pool_padding="SAME")]
    flags = build.CFLAGS
    for g, graph in enumerate(graphs):
        instructions = {}
        for path, defines in (("asm", ()), ("intrinsics", ("-DCTXCONV_NO_ASM",)),
                              ("plain", ("-DCTXCONV_NO_DSP",))):
            monkeypatch.setattr(build, "CFLAGS", (*flags, *defines))
            work = tmp_path / f"{g}_{path}"
            work.mkdir()
            bundle = bundle_of([as_block(graph, "block0", 70 + g)], work)
            nrf = load_profile("nrf52840")
            plan = plan_on(nrf, bundle.graphs, bundle.num_classes, bundle.tflite)
            rep = check_emulated(bundle, work / "c", nrf, plan, random_images(bundle, 3, g),
                                 np.zeros(3, np.int64), work)
            assert rep["bit_exact"] and rep["bit_exact_vs_tflm"], (path, rep)
            instructions[path] = rep["blocks"][0]["instructions"]
        assert instructions["asm"] < instructions["intrinsics"] < instructions["plain"], (
            instructions)


def _poisoned(bundle_dir: Path, body: str) -> None:
    """Put ``body`` at the start of block 0's function in the generated C (fault or hang)."""
    src = bundle_dir / "c" / "ctxconv_model.c"
    head = "static void block0_run(const int8_t *context, int32_t head)\n{\n"
    text = src.read_text()
    assert head in text, "block 0's function is not where the poison goes"
    src.write_text(text.replace(head, head + body))


@needs_arm
@pytest.mark.parametrize(("body", "message"), [
    ("    ((void (*)(void))0xFFFFFFF0u)();\n",
     r"emulated cortex-m4f \(mps2-an386\) failed in block 0 of image 0: fault: HardFault"),
    ("    for (;;) { __asm__ volatile(\"\"); }\n",
     r"did not finish within 3 s \(stopped in block 0 of image 0\)"),
])  # fmt: skip
def test_emulator_fault_or_hang_is_a_clear_error(tmp_path, body, message, monkeypatch):
    import ctxconv.sim.firmware_check as check

    bundle = bundle_of([as_block(conv_graph(60), "block0", 60)], tmp_path)
    _poisoned(tmp_path, body)
    monkeypatch.setattr(check, "EMULATED_SECONDS_PER_IMAGE", 0.0)
    monkeypatch.setattr(check, "EMULATOR_START_SECONDS", 3.0)
    with pytest.raises(FirmwareError, match=message):
        check_emulated(bundle, tmp_path / "c", load_profile("nrf52840"), None,
                       random_images(bundle, 2, 0), np.zeros(2, np.int64), tmp_path)
    # no emulator outlives the check: not the one stopped at the limit, nor the other
    # worker's, whose process the first error ended
    deadline = time.monotonic() + 5
    while _emulators_of(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _emulators_of(tmp_path)


@needs_arm
def test_an_emulator_dies_with_the_worker_that_started_it(tmp_path):
    """A worker ended by another worker's error (map_forked terminates it) takes its
    emulator with it, even one running firmware that never returns."""
    from ctxconv.runtimes.firmware.build import build_arm
    from ctxconv.runtimes.firmware.run import encode_inputs, run_program
    from ctxconv.runtimes.firmware.targets import target_for
    from ctxconv.sim.shards import map_forked

    bundle = bundle_of([as_block(conv_graph(61), "block0", 61)], tmp_path)
    _poisoned(tmp_path, "    for (;;) { __asm__ volatile(\"\"); }\n")
    nrf = load_profile("nrf52840")
    build = build_arm(tmp_path / "c", tmp_path, ["multipass"], target_for(nrf), nrf)
    inputs = encode_inputs(random_images(bundle, 1, 0), False)

    def job(i: int, progress) -> None:
        if i == 0:
            time.sleep(1.5)  # the other worker's emulator is running by now
            raise FirmwareError("the first worker failed")
        work = tmp_path / f"w{i}"
        work.mkdir()
        run_program(build.elf, inputs, work, 120.0, build.target)

    with pytest.raises(FirmwareError, match="the first worker failed"):
        map_forked(job, [0, 1], "emulated")
    deadline = time.monotonic() + 5
    while _emulators_of(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _emulators_of(tmp_path)


def _emulators_of(folder: Path) -> list[int]:
    """Pids of running QEMU processes whose command line names ``folder``."""
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "qemu-system-arm" in cmd and str(folder) in cmd:
            pids.append(int(proc.name))
    return pids


def test_arena_placement_never_overlaps_live_bytes():
    """Random shrinking buffers: at every step the occupied ranges are disjoint."""
    from ctxconv.memory.c_arena import _place

    rng = np.random.default_rng(0)
    for _ in range(200):
        profiles = {}
        for r in range(int(rng.integers(1, 9))):
            first = int(rng.integers(0, 10))
            size = int(rng.integers(1, 400))
            prof = {}
            for t in range(first, first + int(rng.integers(1, 6))):
                prof[t] = size
                size = max(1, size - int(rng.integers(0, 200)))  # in-place shrinking
            profiles[f"r{r}"] = prof
        offsets, total = _place(profiles)
        for t in range(20):
            spans = sorted((offsets[r], offsets[r] + p[t]) for r, p in profiles.items()
                           if t in p)
            assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False)), offsets
            assert all(end <= total for _, end in spans)
        assert all(off % 4 == 0 for off in offsets.values())


@needs_cc
def test_class_names_survive_as_c_strings(tmp_path):
    """Any class name, quotes, backslashes, trigraph marks and UTF-8 included, round-trips."""
    from ctxconv.codegen.sources import c_string

    names = ['T-shirt/top', 'say "hi"', 'back\\slash', '??=', 'café', 'tab\there']
    src = tmp_path / "names.c"
    src.write_text("#include <stdio.h>\nstatic const char *names[] = {"
                   + ", ".join(c_string(n) for n in names)
                   + f"}};\nint main(void) {{ for (int i = 0; i < {len(names)}; ++i) "
                   "printf(\"%s\\n\", names[i]); return 0; }\n")
    exe = tmp_path / "names"
    subprocess.run(["cc", "-std=c99", "-Wall", "-Werror", str(src), "-o", str(exe)], check=True)
    out = subprocess.run([str(exe)], capture_output=True, check=True).stdout.decode("utf-8")
    assert out.split("\n")[:-1] == names
