"""read_tflite: write_tflite round trip, and damaged files raise ModelFileError only."""

from __future__ import annotations

import time

import numpy as np
import pytest
from fw_graphs import add_graph, chain_graph, conv_graph, fc_graph
from graph_factory import tiny_block_graph, tiny_float_graph

from ctxconv.blockgraph.ir import BlockGraph, ModelFileError
from ctxconv.blockgraph.tflite.reader import read_tflite
from ctxconv.blockgraph.tflite.writer import write_tflite
from ctxconv.runtimes.reference import run_graph


def _options(op) -> dict:
    return {k: tuple(v) if isinstance(v, list | tuple) else v for k, v in op.options.items()}


def assert_same_ir(a: BlockGraph, b: BlockGraph) -> None:
    assert a.name == b.name
    assert list(a.tensors) == list(b.tensors)
    for name, x in a.tensors.items():
        y = b.tensors[name]
        assert (tuple(x.shape), x.dtype) == (tuple(y.shape), y.dtype), name
        assert (x.data is None) == (y.data is None), name
        if x.data is not None:
            assert y.data.dtype == np.dtype(x.dtype)
            np.testing.assert_array_equal(x.data, y.data)
        assert (x.quant is None) == (y.quant is None), name
        if x.quant is not None:
            np.testing.assert_array_equal(np.asarray(x.quant.scale, np.float32), y.quant.scale)
            np.testing.assert_array_equal(x.quant.zero_point, y.quant.zero_point)
            assert x.quant.axis == y.quant.axis, name
    assert [(o.kind, o.inputs, o.outputs, _options(o)) for o in a.ops] == [
        (o.kind, o.inputs, o.outputs, o.options) for o in b.ops
    ]
    assert (a.inputs, a.outputs) == (b.inputs, b.outputs)


ROUND_TRIP = [
    tiny_block_graph(0),
    tiny_block_graph(1, with_pool=False, contextual_add=True, fc_per_channel=True),
    tiny_float_graph(2, contextual_add=True),
    conv_graph(3, per_channel=False, pool="AVERAGE_POOL_2D", pool_padding="SAME"),
    conv_graph(4, stride=(2, 1), padding="VALID", pool="MAX_POOL_2D"),
    fc_graph(5, per_channel=True),
    add_graph(6, b_shape=(1, 1, 1, 3), b_constant=True),
    chain_graph(7, n_blocks=3, context=True),
]


@pytest.mark.parametrize("graph", ROUND_TRIP, ids=lambda g: g.name)
def test_round_trip(graph: BlockGraph):
    back = read_tflite(write_tflite(graph))
    assert_same_ir(graph, back)


def test_name_fallback_and_type_errors():
    g = read_tflite(write_tflite(tiny_block_graph(0)), name="ignored")
    assert g.name == "tiny_block"  # the file's subgraph name wins
    with pytest.raises(ModelFileError, match="expected bytes"):
        read_tflite("not bytes")  # type: ignore[arg-type]
    with pytest.raises(ModelFileError, match="too short"):
        read_tflite(b"TFL3")
    with pytest.raises(ModelFileError, match="identifier"):
        read_tflite(b"\x00" * 64, name="zeros")


def _corruptions(base: list[bytes], n: int, seed: int):
    """Truncations, random files, bit flips and random 4-byte overwrites."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        d = bytearray(base[i % len(base)])
        mode = i % 4
        if mode == 0:
            d = d[: int(rng.integers(0, len(d)))]
        elif mode == 1:
            d = bytearray(
                rng.integers(0, 256, int(rng.integers(0, 2048)), dtype=np.uint8).tobytes()
            )
            if len(d) >= 8 and i % 8 == 1:
                d[4:8] = b"TFL3"  # get past the identifier check
        elif mode == 2:
            for _ in range(int(rng.integers(1, 9))):
                j = int(rng.integers(0, len(d)))
                d[j] ^= 1 << int(rng.integers(0, 8))
        else:
            j = int(rng.integers(0, len(d) - 4))
            d[j : j + 4] = rng.integers(0, 256, 4, dtype=np.uint8).tobytes()
        yield mode, bytes(d)


def test_corrupted_files_raise_model_file_error():
    base = [write_tflite(tiny_block_graph(0, contextual_add=True)), write_tflite(fc_graph(1))]
    counts = {"error": 0, "parsed": 0}
    start = time.perf_counter()
    for mode, data in _corruptions(base, 800, seed=0):
        try:
            g = read_tflite(data, name=f"mode{mode}")
        except ModelFileError as exc:
            assert str(exc).startswith("model 'mode"), exc
            counts["error"] += 1
            continue
        counts["parsed"] += 1  # e.g. a flipped weight bit: still a valid model
        zeros = {n: np.zeros((2, *g.tensors[n].shape[1:]), g.tensors[n].dtype) for n in g.inputs}
        try:
            run_graph(g, zeros)
        except ValueError:
            pass  # a damaged but parseable model may still be rejected by the kernels
    assert counts["error"] >= 600, counts
    assert time.perf_counter() - start < 30


def test_reads_a_converter_made_model():
    """The TFLM wheel's sine model (written by the TFLite converter, not by us)."""
    from pathlib import Path

    import tflite_micro

    from ctxconv.runtimes.runners import TFLMRunner

    path = Path(tflite_micro.__file__).parent / "python" / "tflite_micro" / "sine_float.tflite"
    if not path.is_file():
        pytest.skip("sine_float.tflite is not shipped with this tflite-micro wheel")
    data = path.read_bytes()
    g = read_tflite(data)
    assert [op.kind for op in g.ops] == ["FULLY_CONNECTED"] * 3
    x = np.linspace(0, 6.28, 32, dtype=np.float32).reshape(32, 1)
    ours = run_graph(g, {g.inputs[0]: x})[g.outputs[0]]
    ref = TFLMRunner(data, arena_size=1 << 16, check_arena=False).run({g.inputs[0]: x})
    np.testing.assert_allclose(ours, ref[g.outputs[0]].reshape(ours.shape), atol=1e-5)


def test_litert_schema_fallback(monkeypatch):
    """The reader works with LiteRT's copy of the generated schema too."""
    from ai_edge_litert import schema_py_generated

    import ctxconv.blockgraph.tflite.reader as reader

    monkeypatch.setattr(reader, "schema", lambda: schema_py_generated)
    g = tiny_block_graph(3, contextual_add=True)
    assert_same_ir(g, reader.read_tflite(write_tflite(g)))
