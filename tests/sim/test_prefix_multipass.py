"""Simulator and generated C for models whose first contextual block is not the last one:
multipass runs block 0's context-free conv once, the rest of the pipeline per candidate."""

from pathlib import Path

import pytest
from test_firmware_c import needs_arm, needs_cc
from tiny_runs import train_tiny

from ctxconv.blockgraph.bundle import load_export
from ctxconv.export.exporter import ExportOptions, export_run
from ctxconv.memory.c_arena import plan_arena
from ctxconv.sim.cost import estimate_latency
from ctxconv.sim.firmware_check import check_emulated, check_host
from ctxconv.sim.fit import plan_on
from ctxconv.sim.profiles import load_profile
from ctxconv.sim.simulate import SimOptions, simulate

K = 10
# tiny_runs: digits 8x8x1, blocks [[1, 8, 3], [2, 16, 3]], linear goodness on a 4x4 grid
CONV0 = 8 * 8 * 8 * (3 * 3 * 1)  # block 0's conv of the image: shared by all candidates
CTX0 = 8 * K  # block 0's context FC (K -> 8 channels): per candidate
HEAD0 = K * 8 * 4 * 4
CONV1 = 4 * 4 * 16 * (3 * 3 * 8)  # block 1 runs on each candidate's features
CTX1 = 16 * K
HEAD1 = K * 16 * 4 * 4


@pytest.fixture(scope="module", params=["first", "all", "unscored"])
def prefix(request, tmp_path_factory) -> tuple[str, Path]:
    """"unscored": as "first", but only block 1's scores are summed (block 0's weigh 0, so
    the C runs block 0 without its head)."""
    contextual = {"first": [True, False], "all": [True, True], "unscored": [True, False]}
    scored = {"unscored": [1]}.get(request.param)
    run = train_tiny(tmp_path_factory.mktemp(f"fw_prefix_{request.param}") / "run", epochs=2,
                     contextual=contextual[request.param], injection="bias",
                     score_blocks=scored)
    export_run(run, run / "export", ExportOptions(verify_samples=20, test_samples=40, max_lsb=2))
    return request.param, run / "export"


def test_multipass_macs_and_latency_by_hand(prefix):
    kind, export = prefix
    report = simulate(export, SimOptions(mode="multipass", measure_tflm=False,
                                         bit_exact_images=0))
    b0, b1 = report["blocks"]
    if kind == "unscored":  # block 0's scores weigh 0: its head does not run
        assert b0["macs"] == CONV0 + K * CTX0 == 5_408
    else:
        assert b0["macs"] == CONV0 + K * (CTX0 + HEAD0) == 18_208
    block1 = K * (CONV1 + HEAD1 + (CTX1 if kind == "all" else 0))
    assert b1["macs"] == block1 == {"first": 209_920, "all": 211_520, "unscored": 209_920}[kind]
    assert report["macs"] == b0["macs"] + b1["macs"]
    assert b1["runs"] == K and b1["unshared_macs"] == b1["macs"]
    graph = load_export(export).graphs[1]
    profile = load_profile("nrf52840")
    one_pass = estimate_latency(graph, profile).seconds * 1e3
    assert b1["latency_ms"] == pytest.approx(K * one_pass)


def test_plan_stages_the_loop_input_beside_the_boundary(prefix):
    """The candidate loop restarts from block 0's input (the 8x8x1 image) while block 0's
    features (8x8x8) cross to block 1: both are staged."""
    _, export = prefix
    bundle = load_export(export)
    plan = plan_on(load_profile("nrf52840"), bundle.graphs, K, bundle.tflite)
    assert plan.staging_bytes == 8 * 8 * 1 + 8 * 8 * 8


def test_c_arena_keeps_what_the_loop_rereads(prefix):
    """Block 0's conv output is written once before the candidate loop and re-read in every
    pass: no buffer written inside the loop may overlap it."""
    _, export = prefix
    layout = plan_arena(load_export(export).graphs)
    start = next(i for i, s in enumerate(layout.steps) if s.per_context)
    held = "b0.conv_pre"
    assert layout.steps[start - 1].output == held
    lo, hi = layout.offset(held), layout.offset(held) + layout.sizes[held]
    loop_writes = {s.output for s in layout.steps[start:] if s.op.kind != "RESHAPE"} | {
        s.scratch for s in layout.steps[start:] if s.scratch}  # (a RESHAPE is a view)
    assert any(s.block == 1 for s in layout.steps[start:])
    for name in loop_writes - set(layout.in_place):  # in place: its input's bytes
        off, size = layout.offset(name), layout.sizes[name]
        assert off + size <= lo or off >= hi, (name, off, size, lo, hi)


@needs_cc
def test_host_build_is_bit_exact_and_loops_over_the_later_blocks(prefix, tmp_path):
    kind, export = prefix
    bundle = load_export(export)
    raw, labels = bundle.test_vectors()
    report, _ = check_host(bundle, export / "c", raw, labels, tmp_path)
    assert report["bit_exact"], report
    assert report["modes"]["multipass"]["accuracy"] == pytest.approx(
        bundle.manifest["accuracy"]["int8"]["multipass"], abs=0.05)
    src = (export / "c" / "ctxconv_model.c").read_text()
    multipass = src[src.index("void ctxconv_classify_multipass"):]
    loop = multipass.index("for (int32_t k = 0")
    head = int(kind != "unscored")  # block 0 runs without its head when its scores weigh 0
    assert multipass.index(f"block0_shared({head});") < loop
    assert loop < multipass.index(f"block0_per_context(context_buffer, {head});") < (
        multipass.index("q = ctxconv_run_block(1, context_buffer);"))
    assert ("WEIGHTED(0," in multipass) == bool(head)


@needs_arm
def test_emulated_cortex_m4_is_bit_exact(prefix, tmp_path):
    _, export = prefix
    bundle = load_export(export)
    raw, labels = bundle.test_vectors(3)
    nrf = load_profile("nrf52840")
    plan = plan_on(nrf, bundle.graphs, K, bundle.tflite)
    rep = check_emulated(bundle, export / "c", nrf, plan, raw, labels, tmp_path)
    assert rep["bit_exact"] and rep["bit_exact_vs_tflm"], rep
    # per-image instructions per MAC divide by the MACs the C executes in that mode
    kind = prefix[0]
    head0 = 0 if kind == "unscored" else HEAD0
    multipass = CONV0 + K * (CTX0 + head0) + K * (CONV1 + HEAD1 + (CTX1 if kind == "all" else 0))
    assert rep["macs_per_image"]["multipass"] == multipass
    assert rep["instructions_per_mac"]["multipass"] == round(
        rep["instructions_per_image"]["multipass"] / multipass, 3)
