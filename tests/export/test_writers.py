"""TFLite and ONNX writers and the runtimes wrapper.

Small block graphs from ``graph_factory`` are written in both formats and run in
LiteRT (reference kernels), TFLM and onnxruntime; runners refuse malformed files.
The .tflite reader's own tests (damaged files included) are in ``tests/blockgraph``.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ for graph_factory

import graph_factory as gf  # noqa: E402

from ctxconv.blockgraph.ir import BlockGraph, ModelFileError, Op, Quant  # noqa: E402
from ctxconv.blockgraph.onnx import QUANT_METADATA_KEY, write_onnx  # noqa: E402
from ctxconv.blockgraph.tflite.schema import schema  # noqa: E402
from ctxconv.blockgraph.tflite.writer import write_tflite  # noqa: E402
from ctxconv.runtimes.runners import (  # noqa: E402
    LiteRTRunner,
    OnnxRunner,
    TFLMRunner,
    read_tflite_io,
    run_tflm_isolated,
    tflm_min_arena,
)

ARENA = 64 * 1024  # ample for the tiny graphs (their minimum is ~2.5 KiB)
VARIANTS = {
    "pool": {"with_pool": True},
    "nopool": {"with_pool": False},
    "context": {"contextual_add": True},
    "fc_per_channel": {"fc_per_channel": True},
}


def _graph(variant: str, seed: int = 0, **extra) -> BlockGraph:
    return gf.tiny_block_graph(seed, **VARIANTS[variant], **extra)


def _tflm(data: bytes, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return TFLMRunner(data, ARENA, check_arena=False).run(inputs)


def _model_t(data: bytes):
    fb = schema()
    return fb, fb.ModelT.InitFromObj(fb.Model.GetRootAs(data, 0))


# --------------------------------------------------------------------------- TFLite file


def test_tflite_file_layout() -> None:
    graph = _graph("pool")
    data = write_tflite(graph, description="unit test")
    assert data[4:8] == b"TFL3"
    fb, m = _model_t(data)
    assert m.version == 3 and m.description == b"unit test"
    assert m.buffers[0].data is None  # empty sentinel
    sg = m.subgraphs[0]
    consts = [t for t in sg.tensors if t.buffer != 0]
    assert len({t.buffer for t in consts}) == len(consts) == len(m.buffers) - 1
    for oc in m.operatorCodes:
        assert oc.deprecatedBuiltinCode == min(oc.builtinCode, 127)
    versions = {oc.builtinCode: oc.version for oc in m.operatorCodes}
    assert versions[fb.BuiltinOperator.CONV_2D] == 3
    assert versions[fb.BuiltinOperator.FULLY_CONNECTED] == 4
    by_name = {t.name.decode(): t for t in sg.tensors}
    w = by_name["conv_w"]
    assert w.quantization.quantizedDimension == 0 and len(w.quantization.scale) == 8
    ops = {m.operatorCodes[op.opcodeIndex].builtinCode: op for op in sg.operators}
    conv = ops[fb.BuiltinOperator.CONV_2D].builtinOptions
    assert (conv.strideH, conv.strideW, conv.padding) == (1, 1, fb.Padding.SAME)
    assert conv.fusedActivationFunction == fb.ActivationFunctionType.RELU
    reshape = ops[fb.BuiltinOperator.RESHAPE]
    assert list(reshape.builtinOptions.newShape) == [1, 32] and len(reshape.inputs) == 2
    fc = ops[fb.BuiltinOperator.FULLY_CONNECTED].builtinOptions
    assert fc.keepNumDims is False and fc.weightsFormat == 0


def test_tflite_buffers_are_16_byte_aligned() -> None:
    data = write_tflite(_graph("context"))
    fb = schema()
    model = fb.Model.GetRootAs(data, 0)
    starts = []
    for i in range(1, model.BuffersLength()):
        tab = model.Buffers(i)._tab
        starts.append(tab.Vector(tab.Offset(4)))
    assert starts and all(s % 16 == 0 for s in starts)


def test_tflite_matches_tflm_align_tool(tmp_path: Path) -> None:
    """TFLM's own re-alignment tool finds nothing to change in the content."""
    align = pytest.importorskip(
        "tflite_micro.tensorflow.lite.micro.tools.tflite_flatbuffer_align_wrapper"
    )
    data = write_tflite(_graph("pool"))
    src, dst = tmp_path / "a.tflite", tmp_path / "b.tflite"
    src.write_bytes(data)
    align.align_tflite_model(str(src), str(dst))
    ours, theirs = _model_t(data)[1], _model_t(dst.read_bytes())[1]
    for a, b in zip(ours.buffers, theirs.buffers, strict=True):
        assert (a.data is None and b.data is None) or bytes(a.data) == bytes(b.data)
    assert [t.name for t in ours.subgraphs[0].tensors] == [
        t.name for t in theirs.subgraphs[0].tensors
    ]


def test_writer_rejects_bad_graphs() -> None:
    graph = _graph("pool")
    bad = copy.deepcopy(graph)
    bad.ops[0] = Op("SOFTMAX", bad.ops[0].inputs, bad.ops[0].outputs, {})
    for writer in (write_tflite, write_onnx):
        with pytest.raises(ValueError, match="SOFTMAX"):
            writer(bad)
    bad = copy.deepcopy(graph)
    bad.tensors["conv_b"].quant = Quant(
        bad.tensors["conv_b"].quant.scale * 2, bad.tensors["conv_b"].quant.zero_point, 0
    )
    with pytest.raises(ValueError, match="input_scale \\* weight_scale"):
        write_tflite(bad)
    bad = copy.deepcopy(graph)
    bad.tensors["avgpool"].quant = Quant.per_tensor(0.5, 3)
    with pytest.raises(ValueError, match="AVERAGE_POOL_2D"):
        write_onnx(bad)
    bad = copy.deepcopy(graph)
    bad.tensors["conv"].shape = (1, 5, 5, 8)
    with pytest.raises(ValueError, match="CONV_2D"):
        write_tflite(bad)


# --------------------------------------------------------------------------- ONNX file


@pytest.mark.parametrize("variant", ["pool", "context"])
def test_onnx_interface_matches_tflite(variant: str) -> None:
    graph = _graph(variant)
    model = onnx.load_from_string(write_onnx(graph))
    onnx.checker.check_model(model, full_check=True)
    t_in, t_out = read_tflite_io(write_tflite(graph))
    for specs, values in ((t_in, model.graph.input), (t_out, model.graph.output)):
        assert [s.name for s in specs] == [v.name for v in values]
        for spec, v in zip(specs, values, strict=True):
            dims = v.type.tensor_type.shape.dim
            assert dims[0].dim_param == "N"
            assert tuple(d.dim_value for d in dims[1:]) == spec.shape[1:]
            assert v.type.tensor_type.elem_type == onnx.TensorProto.INT8
            record = json.loads(v.doc_string)
            assert record["scale"] == pytest.approx(spec.scale)
            assert tuple(record["zero_point"]) == spec.zero_point
    meta = {p.key: p.value for p in model.metadata_props}
    assert set(json.loads(meta[QUANT_METADATA_KEY])) == {s.name for s in [*t_in, *t_out]}
    # weights are int8 initializers, conv weights with per-channel DequantizeLinear
    inits = {i.name: i for i in model.graph.initializer}
    assert inits["conv_w"].data_type == onnx.TensorProto.INT8
    assert inits["conv_b"].data_type == onnx.TensorProto.INT32
    dq_axes = [
        a.i for n in model.graph.node if n.op_type == "DequantizeLinear" for a in n.attribute
    ]
    assert 0 in dq_axes


# --------------------------------------------------------------------------- numerics


@pytest.mark.parametrize("variant", ["pool", "nopool", "context"])
def test_litert_reference_equals_tflm_bit_exact(variant: str) -> None:
    """Conv, pools and ADD: LiteRT BUILTIN_REF and TFLM agree to 0 LSB."""
    graph = _graph(variant, seed=1, with_head=False)
    data = write_tflite(graph)
    inputs = gf.random_int8_inputs(graph, 32, seed=5)
    lite = LiteRTRunner(data).run(inputs)
    micro = _tflm(data, inputs)
    for name in graph.outputs:
        np.testing.assert_array_equal(lite[name], micro[name])


@pytest.mark.parametrize("variant", ["pool", "fc_per_channel"])
def test_litert_reference_vs_tflm_fully_connected(variant: str) -> None:
    """LiteRT's int8 FULLY_CONNECTED rounds once, TFLM twice: rare 1-LSB ties only."""
    graph = _graph(variant, seed=2)
    data = write_tflite(graph)
    inputs = gf.random_int8_inputs(graph, 64, seed=6)
    lite = LiteRTRunner(data).run(inputs)["logits"].astype(int)
    micro = _tflm(data, inputs)["logits"].astype(int)
    diff = np.abs(lite - micro)
    assert diff.max() <= 1 and diff.mean() < 0.02


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_onnxruntime_within_one_lsb_of_tflm(variant: str) -> None:
    graph = _graph(variant, seed=3)
    inputs = gf.random_int8_inputs(graph, 48, seed=7)
    ort_out = OnnxRunner(write_onnx(graph)).run(inputs)
    micro = _tflm(write_tflite(graph), inputs)
    for name in graph.outputs:
        assert ort_out[name].dtype == np.int8 and ort_out[name].shape == micro[name].shape
        assert np.abs(ort_out[name].astype(int) - micro[name]).max() <= 1


def test_onnx_average_pool_is_exact_without_head() -> None:
    """The int8 average pool in ONNX reproduces TFLite's rounding exactly."""
    graph = _graph("context", seed=4, with_head=False)
    graph.ops = [op for op in graph.ops if op.kind == "AVERAGE_POOL_2D"]
    graph.inputs = [graph.ops[0].inputs[0]]
    inputs = gf.random_int8_inputs(graph, 16, seed=8)
    ort_out = OnnxRunner(write_onnx(graph)).run(inputs)
    micro = _tflm(write_tflite(graph), inputs)
    np.testing.assert_array_equal(ort_out["avgpool"], micro["avgpool"])


@pytest.mark.parametrize("variant", ["pool", "context"])
def test_float_graph_matches_numpy(variant: str) -> None:
    graph = gf.dequantize_graph(_graph(variant))
    inputs = gf.random_float_inputs(graph, 8, seed=9)
    ref = gf.float_forward(graph, inputs)
    tfl = write_tflite(graph)
    results = {
        "onnxruntime": OnnxRunner(write_onnx(graph)).run(inputs),
        "litert-ref": LiteRTRunner(tfl).run(inputs),
        "litert": LiteRTRunner(tfl, reference_kernels=False).run(inputs),
        "tflm": _tflm(tfl, inputs),
    }
    for runtime, out in results.items():
        for name in graph.outputs:
            assert out[name].dtype == np.float32, runtime
            np.testing.assert_allclose(out[name], ref[name], rtol=1e-5, atol=1e-5, err_msg=runtime)


def test_onnx_runs_any_batch_size() -> None:
    graph = _graph("context")
    runner = OnnxRunner(write_onnx(graph))
    for n in (1, 5):
        out = runner.run(gf.random_int8_inputs(graph, n, seed=n))
        assert out["logits"].shape == (n, 10)


# --------------------------------------------------------------------------- runners


def test_runner_interface_and_input_checks() -> None:
    graph = _graph("context")
    tfl, onx = write_tflite(graph), write_onnx(graph)
    runners = [LiteRTRunner(tfl), TFLMRunner(tfl, ARENA, check_arena=False), OnnxRunner(onx)]
    for r in runners:
        assert r.input_names == ["input", "context"] and r.output_names == ["logits"]
    inputs = gf.random_int8_inputs(graph, 3, seed=1)
    outs = [r.run(inputs)["logits"] for r in runners]
    assert all(o.shape == (3, 10) and o.dtype == np.int8 for o in outs)
    for r in runners:
        with pytest.raises(ValueError, match="context"):
            r.run({"input": inputs["input"]})
        with pytest.raises(ValueError, match="int8"):
            r.run({**inputs, "input": inputs["input"].astype(np.float32)})
    iso = run_tflm_isolated(tfl, inputs, ARENA)
    np.testing.assert_array_equal(iso["logits"], outs[1])


def test_tflm_min_arena_is_tight() -> None:
    graph = _graph("context")
    data = write_tflite(graph)
    size = tflm_min_arena(data)
    assert size % 16 == 0 and 1024 < size < ARENA
    inputs = gf.random_int8_inputs(graph, 2, seed=2)
    out = TFLMRunner(data, size).run(inputs)  # probes the arena in a child first
    np.testing.assert_array_equal(out["logits"], _tflm(data, inputs)["logits"])
    with pytest.raises(RuntimeError, match="arena"):
        run_tflm_isolated(data, inputs, size - 16)
    with pytest.raises(RuntimeError, match="arena"):
        TFLMRunner(data, size - 16)


def test_tflm_crash_becomes_runtime_error() -> None:
    graph = _graph("pool")
    with pytest.raises(RuntimeError, match="crashed"):
        run_tflm_isolated(write_tflite(graph), gf.random_int8_inputs(graph, 1, seed=0), 160)


# --------------------------------------------------------------------------- bad files


def test_runners_reject_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="TFL3"):
        LiteRTRunner(b"\0" * 64)
    with pytest.raises(ModelFileError, match="lies outside"):
        TFLMRunner(write_tflite(_graph("pool"))[:-40], ARENA)
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"not a protobuf at all")
    with pytest.raises(ModelFileError, match="broken.onnx"):
        OnnxRunner(path)
    with pytest.raises(ModelFileError, match="cannot read"):
        LiteRTRunner(tmp_path / "missing.tflite")


def test_runtimes_import_is_light() -> None:
    """Importing the runtimes module loads no runtime and never torch."""
    code = (
        "import sys, ctxconv.runtimes.runners\n"
        "heavy = {'torch', 'onnxruntime', 'tflite_micro', 'ai_edge_litert', 'onnx'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
