"""ctxconv-sim / ctxconv-bench on a real export: memory, accuracy, TFLM, bad input."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ctxconv.blockgraph.bundle import load_export
from ctxconv.blockgraph.ir import ModelFileError
from ctxconv.blockgraph.manifest import seal_manifest
from ctxconv.blockgraph.pipeline import BlockPipeline, modes_coincide
from ctxconv.runtimes.factory import make_runners
from ctxconv.sim.bench_cli import main as bench_main
from ctxconv.sim.cli import main as sim_main
from ctxconv.sim.reference_pass import reference_pass
from ctxconv.sim.simulate import (
    SimOptions,
    format_table,
    memory_figure,
    simulate,
)


@pytest.fixture(scope="module")
def export_dir(digits_export) -> Path:
    return Path(digits_export["export_dir"])


@pytest.fixture(scope="module")
def report(export_dir):
    return simulate(export_dir, SimOptions(mcu="nrf52840", images=200))


def test_report_fields_and_fit(report, digits_export):
    for key in ("fits", "arena_bytes", "flash_bytes", "accuracy", "tflm_min_arena_bytes",
                "bit_exact_vs_tflm", "latency_ms", "macs"):
        assert key in report, key
    assert report["fits"] is True and report["problems"] == []
    assert report["mode"] == "onepass" and report["images"] == 200
    assert report["macs"] == sum(b["macs"] for b in digits_export["blocks"])
    assert report["latency_ms"] > 0 and report["energy_mj"] > 0


def test_reference_kernels_bit_exact_with_tflm(report):
    assert report["bit_exact_vs_tflm"] is True
    assert report["max_lsb_vs_tflm"] == [0, 0]
    # by default every image run is compared, and the report says how many
    assert report["bit_exact_images"] == report["images"] == 200
    assert "bit-exact vs TFLM on 200 of " in format_table(report)


def test_bit_exact_check_covers_every_test_vector_by_default(export_dir, digits_export):
    rep = simulate(export_dir, SimOptions(measure_tflm=False))
    total = json.loads((export_dir / "manifest.json").read_text())["test_vectors"]["count"]
    assert rep["bit_exact_images"] == rep["test_vectors"] == rep["images"] == total > 256
    assert rep["bit_exact_vs_tflm"] is True and rep["max_lsb_vs_tflm"] == [0, 0]
    assert f"bit-exact vs TFLM on {total} of {total} test vectors: True" in format_table(rep)


def test_bit_exact_images_limits_the_check(export_dir, capsys):
    rep = simulate(export_dir, SimOptions(measure_tflm=False, bit_exact_images=5))
    assert rep["bit_exact_images"] == 5 and rep["images"] == rep["test_vectors"]
    skipped = simulate(export_dir, SimOptions(measure_tflm=False, bit_exact_images=0))
    assert skipped["bit_exact_vs_tflm"] is None and skipped["max_lsb_vs_tflm"] == []
    capsys.readouterr()
    assert sim_main([str(export_dir), "--no-tflm-arena", "--bit-exact-images", "-1"]) == 2
    err = capsys.readouterr().err
    assert "error: --bit-exact-images must be >= 0 (0 skips the check)" in err.splitlines()
    assert sim_main([str(export_dir), "--workers", "0"]) == 2
    assert "error: --workers must be >= 1" in capsys.readouterr().err
    assert bench_main([str(export_dir), "--bit-exact-images", "-3"]) == 2
    assert "--bit-exact-images must be >= 0" in capsys.readouterr().err


@pytest.mark.parametrize("workers", [1, 3])
def test_reference_pass_in_chunks_and_shards_finds_a_difference(export_dir, workers):
    """Chunks and worker shards keep the worst difference of each (a changed bias is
    caught), the predictions are those of the reference pipeline in image order, and only
    the first ``check`` images are compared."""
    bundle = load_export(export_dir)
    raw, _ = bundle.test_vectors(40)
    mode = bundle.manifest["modes"][0]
    ok = reference_pass(bundle, raw, mode, len(raw), workers, chunk=7, min_shard=10)
    assert ok.diffs == [0, 0]
    pipe = BlockPipeline(bundle.manifest, make_runners(bundle, "reference"))
    assert (ok.predictions == pipe.predict(raw, mode)).all()
    conv = next(t for t in bundle.graphs[1].tensors.values() if t.data is not None
                and t.data.dtype == np.int32)
    conv.data = conv.data + 1000  # the reference kernels now compute another block 1
    bad = reference_pass(bundle, raw, mode, len(raw), workers, chunk=7, min_shard=10)
    assert bad.diffs[0] == 0 and bad.diffs[1] > 0
    assert reference_pass(bundle, raw, mode, 0, workers, chunk=7, min_shard=10).diffs == []


def test_a_failing_worker_is_an_error_not_a_hang(export_dir, monkeypatch):
    import ctxconv.sim.reference_pass as rp

    def broken(*args, **kwargs):
        raise MemoryError("planted")

    monkeypatch.setattr(rp, "run_shard", broken)
    bundle = load_export(export_dir)
    raw, _ = bundle.test_vectors(40)
    with pytest.raises(MemoryError, match="planted"):  # the worker's own error, not a wrapper
        rp.reference_pass(bundle, raw, bundle.manifest["modes"][0], 40, 2, min_shard=10)


def test_planner_never_below_tflm_and_within_ten_percent(report):
    for b in report["blocks"]:
        assert b["tflm_min_arena_bytes"] <= b["planned_reference_arena_bytes"], b
        assert b["planned_reference_arena_bytes"] <= 1.10 * b["tflm_min_arena_bytes"], b
    assert report["planner_never_below_tflm"] is True


def test_the_c_arena_is_the_generated_librarys_and_smaller_than_tflm(report, export_dir):
    c = load_export(export_dir).manifest["c"]
    assert report["c_arena_bytes"] == c["arena_bytes"]  # the layout the C was written with
    assert report["c_arena_bytes"] < report["tflm_min_arena_bytes"]
    assert report["c_arena_over_tflm"] == round(report["c_arena_bytes"]
                                                / report["tflm_min_arena_bytes"], 4)


def test_backends_agree(export_dir):
    bundle = load_export(export_dir)
    raw, labels = bundle.test_vectors(60)
    arenas = [4 * g.tensors[g.inputs[0]].nbytes + 16384 for g in bundle.graphs]
    preds = {b: BlockPipeline(bundle.manifest, make_runners(bundle, b, arenas)).predict(
        raw, "onepass") for b in ("reference", "tflm", "litert", "onnxruntime")}
    assert (preds["reference"] == preds["tflm"]).all()
    assert (preds["reference"] == preds["litert"]).all()
    assert (preds["reference"] == preds["onnxruntime"]).mean() >= 0.95
    multi = BlockPipeline(bundle.manifest, make_runners(bundle, "reference")).predict(
        raw, "multipass")
    assert (multi == preds["reference"]).all()  # no contextual block: the same maths


def test_accuracy_matches_export(export_dir, digits_export):
    rep = simulate(export_dir, SimOptions(measure_tflm=False, bit_exact_images=0))
    assert abs(rep["accuracy"] - digits_export["accuracy"]["int8"]["onepass"]) <= 0.01


def test_cli_json_and_plot(export_dir, tmp_path, capsys):
    out = tmp_path / "r.json"
    png = tmp_path / "m.png"
    code = sim_main([str(export_dir), "--mcu", "stm32f746", "--images", "50", "--json",
                     str(out), "--plot", str(png), "--no-tflm-arena"])
    assert code == 0
    data = json.loads(out.read_text())
    assert data["mcu"] == "stm32f746" and data["tflm_min_arena_bytes"] is None
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "verdict: FITS" in capsys.readouterr().out


def test_does_not_fit_gives_breakdown(export_dir, tmp_path, capsys):
    text = (Path(__file__).resolve().parents[2] / "ctxconv/sim/mcu/nrf52840.yaml").read_text()
    tiny = text.replace("name: nrf52840", "name: tiny").replace(
        "sram_bytes: 262144", "sram_bytes: 18000").replace("sram_bytes: 16384", "sram_bytes: 16000")
    path = tmp_path / "tiny.yaml"
    path.write_text(tiny)
    code = sim_main([str(export_dir), "--mcu", str(path), "--images", "10", "--no-tflm-arena",
                     "--plot", str(tmp_path / "p.png")])
    err = capsys.readouterr().err
    assert code == 4
    assert "does not fit tiny" in err and "features" in err


def test_unknown_mode_and_mcu(export_dir, capsys):
    assert sim_main([str(export_dir), "--mcu", "z80", "--no-tflm-arena"]) == 2
    assert "z80" in capsys.readouterr().err


def _corrupt(data: bytes, kind: str, rng: np.random.Generator) -> bytes:
    if kind == "truncate":
        return data[: int(rng.integers(0, len(data)))]
    if kind == "random":
        return rng.integers(0, 256, int(rng.integers(1, 4096)), dtype=np.uint8).tobytes()
    buf = bytearray(data)
    for _ in range(int(rng.integers(1, 8))):
        pos = int(rng.integers(0, len(buf)))
        buf[pos] ^= 1 << int(rng.integers(0, 8))
    return bytes(buf)


@pytest.mark.parametrize("verify", [True, False])
def test_fuzz_corrupted_files_never_crash(export_dir, tmp_path, verify, capsys):
    """>= 200 corrupted .tflite/.onnx/manifest files: a clear error, never a crash."""
    rng = np.random.default_rng(7 if verify else 8)
    work = tmp_path / "export"
    shutil.copytree(export_dir, work)
    originals = {p.name: p.read_bytes() for p in work.iterdir() if p.is_file()}
    targets = ["block0.tflite", "block1.tflite", "block0.onnx", "manifest.json"]
    outcomes = {"error": 0, "ok": 0, "ok_model_file": 0}
    for i in range(120):
        name = targets[i % len(targets)]
        kind = ("truncate", "random", "bitflip")[i % 3]
        (work / name).write_bytes(_corrupt(originals[name], kind, rng))
        try:
            bundle = load_export(work, verify=verify)
            if name.endswith("onnx"):
                make_runners(bundle, "onnxruntime")
            outcomes["ok"] += 1
            outcomes["ok_model_file"] += name != "manifest.json"
        except ModelFileError as exc:
            assert str(exc)
            outcomes["error"] += 1
        if i % 20 == 0:  # and through the command line
            assert sim_main([str(work), "--no-tflm-arena", "--images", "5",
                             "--plot", str(tmp_path / "p.png")]) in (0, 2)
        (work / name).write_bytes(originals[name])
    assert outcomes["error"] >= 60, outcomes
    if verify:  # every modified model file is caught by its checksum (a bit flip in the
        # manifest can land in a field nothing reads, e.g. the creation time)
        assert outcomes["ok_model_file"] == 0, outcomes


def test_hand_edited_manifest(export_dir, tmp_path):
    work = tmp_path / "export"
    shutil.copytree(export_dir, work)
    manifest = json.loads((work / "manifest.json").read_text())
    manifest["files"]["block0.tflite"] = "0" * 64
    (work / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelFileError, match="field 'files.block0.tflite' was changed"):
        load_export(work)
    (work / "manifest.json").write_text(json.dumps(seal_manifest(manifest)))
    with pytest.raises(ModelFileError, match="does not match its sha256"):
        load_export(work)
    (work / "manifest.json").write_text("{not json")
    with pytest.raises(ModelFileError, match="not valid JSON"):
        load_export(work)
    with pytest.raises(ModelFileError, match="does not exist"):
        load_export(tmp_path / "missing")


def test_bench_table(export_dir, tmp_path, capsys):
    code = bench_main([str(export_dir), "--mcu", "nrf52840,rp2040", "--images", "100",
                       "--out", str(tmp_path / "b.md"), "--json", str(tmp_path / "b.json")])
    assert code == 0
    table = (tmp_path / "b.md").read_text()
    # the tiny model has no contextual block: multipass and onepass are one computation
    assert table.count("| nrf52840 | onepass = multipass |") == 1
    assert table.count("| rp2040 |") == 1
    assert "both modes are the same computation (one row per MCU)" in table
    result = json.loads((tmp_path / "b.json").read_text())
    assert set(result["throughput"]) == {"reference", "tflm", "litert", "onnxruntime"}


def test_modes_coincide_only_without_contextual_blocks():
    blocks = [{"contextual": False}, {"contextual": False}]
    assert modes_coincide({"modes": ["multipass", "onepass"], "blocks": blocks})
    assert not modes_coincide({"modes": ["multipass"], "blocks": blocks})
    blocks[1]["contextual"] = True
    assert not modes_coincide({"modes": ["multipass", "onepass"], "blocks": blocks})


def test_sim_table_says_when_modes_are_one_computation(report):
    assert report["modes_coincide"] is True
    assert "mode onepass (= multipass, the same computation)" in format_table(report)


def test_memory_plot_labels_kb_and_zooms_past_a_far_limit(report):
    import matplotlib.pyplot as plt

    fig = memory_figure(report)
    ax_s, ax_f = fig.axes
    labels = [t.get_text() for t in ax_s.texts]
    arena_kb = report["blocks"][0]["arena_bytes"] / 1024
    assert f"{arena_kb:.1f} KB" in labels  # every bar carries its value
    limit_kb = report["sram_limit_bytes"] / 1024
    assert ax_s.get_ylim()[1] < limit_kb / 4  # a few-KB bar stays visible ...
    assert any(t.startswith(f"nrf52840 SRAM available: {limit_kb:.0f} KB (off the scale")
               for t in labels)  # ... and the limit is still stated
    assert all(t.get_text().endswith(" KB") or "off the scale" in t.get_text()
               for t in ax_f.texts)
    assert sum(t.get_text().endswith(" KB") for t in ax_f.texts) == len(report["blocks"]) + 1
    plt.close(fig)


def test_multipass_counts_the_shared_conv_once(tmp_path):
    """A contextual block in multipass: its context-free ops (the conv of the image) once,
    the ops that read the context once per class."""
    from tiny_runs import train_tiny

    from ctxconv.blockgraph.ir import context_dependent_ops
    from ctxconv.export.exporter import ExportOptions, export_run
    from ctxconv.sim.cost import op_work

    run = train_tiny(tmp_path / "run", epochs=1, contextual=[False, True], injection="bias")
    export_run(run, run / "export", ExportOptions(verify_samples=10, test_samples=40, max_lsb=2))
    report = simulate(run / "export", SimOptions(mode="multipass", measure_tflm=False,
                                                 bit_exact_images=0))
    graph = load_export(run / "export").graphs[1]
    macs = [op_work(graph, op) if op.kind in ("CONV_2D", "FULLY_CONNECTED") else 0
            for op in graph.ops]
    dep = context_dependent_ops(graph)
    assert [op.kind for op, d in zip(graph.ops, dep, strict=True) if not d] == [
        "MAX_POOL_2D", "CONV_2D"]  # the image's part, shared
    block = report["blocks"][1]
    shared = sum(m for m, d in zip(macs, dep, strict=True) if not d)
    per_class = sum(m for m, d in zip(macs, dep, strict=True) if d)
    assert block["macs"] == shared + 10 * per_class
    assert block["unshared_macs"] == 10 * (shared + per_class) > block["macs"]


def test_firmware_checks_tflm_on_the_first_thousand_vectors_unless_told():
    from ctxconv.sim.simulate import FIRMWARE_TFLM_IMAGES, default_tflm_images

    assert FIRMWARE_TFLM_IMAGES == 1000
    assert default_tflm_images(SimOptions(backend="firmware")) == 1000
    assert default_tflm_images(SimOptions()) >= 10**9  # the reference backend: every vector
