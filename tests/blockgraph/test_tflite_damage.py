"""The .tflite reader against damaged files, as the runtimes see them.

Random truncations, noise, bit flips and overwritten words must raise
``ModelFileError``; whatever the reader accepts must load and run in LiteRT and TFLM
without crashing them (in a child process). Hand-made semantic damage (a stride of 0,
an index out of range, ops out of order, ...) must be named in the error.
"""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import flatbuffers
import graph_factory as gf
import numpy as np
import pytest

from ctxconv.blockgraph.ir import BlockGraph, ModelFileError
from ctxconv.blockgraph.tflite.reader import read_tflite
from ctxconv.blockgraph.tflite.schema import schema
from ctxconv.blockgraph.tflite.writer import write_tflite


def _graph(variant: str) -> BlockGraph:
    extra = {"pool": {"with_pool": True}, "context": {"contextual_add": True}}[variant]
    return gf.tiny_block_graph(0, **extra)


def _model_t(data: bytes):
    fb = schema()
    return fb, fb.ModelT.InitFromObj(fb.Model.GetRootAs(data, 0))


def _repack(model) -> bytes:
    b = flatbuffers.Builder(1024)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


_SMOKE_CHILD = r"""
import sys, numpy as np
from tflite_micro import runtime
from ai_edge_litert.interpreter import Interpreter, OpResolverType
for path in sys.argv[1:]:
    print("START", path, flush=True)
    data = open(path, "rb").read()
    try:
        micro = runtime.Interpreter.from_bytes(data, arena_size=1 << 17)
        lite = Interpreter(model_content=data,
                           experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
        lite.allocate_tensors()
        for i, d in enumerate(lite.get_input_details()):
            x = np.zeros(d["shape"], d["dtype"])
            lite.set_tensor(d["index"], x)
            micro.set_input(x, i)
        lite.invoke()
        micro.invoke()
    except Exception:
        pass
print("DONE", flush=True)
"""


def _corruptions(data: bytes, rng: np.random.Generator) -> list[tuple[str, bytes]]:
    n = len(data)
    out: list[tuple[str, bytes]] = []
    for cut in [0, 4, 8, 16, n // 3, n // 2, n - 64, n - 4, n - 1, *rng.integers(20, n, 8)]:
        out.append(("truncate", data[: int(cut)]))
    for size in rng.integers(8, 4000, 8):
        noise = rng.integers(0, 256, int(size), dtype=np.uint8).tobytes()
        out.append(("random", noise))
        out.append(("random", noise[:4] + b"TFL3" + noise[8:]))
    for _ in range(40):
        b = bytearray(data)
        pos = int(rng.integers(0, n))
        b[pos] ^= 1 << int(rng.integers(0, 8))
        out.append(("bitflip", bytes(b)))
    for _ in range(30):
        b = bytearray(data)
        pos = int(rng.integers(0, n // 4)) * 4
        b[pos : pos + 4] = struct.pack("<i", int(rng.integers(-(2**31), 2**31)))
        out.append(("word", bytes(b)))
    return out


def test_corrupted_tflite_never_crashes(tmp_path: Path) -> None:
    rng = np.random.default_rng(1234)
    survivors = []
    rejected = {"truncate": 0, "random": 0}
    cases = [c for g in ("pool", "context") for c in _corruptions(write_tflite(_graph(g)), rng)]
    assert len(cases) >= 50
    for i, (kind, data) in enumerate(cases):
        try:
            read_tflite(data, name=f"case{i}")
        except ModelFileError as exc:
            assert str(exc).startswith(f"model 'case{i}': "), exc
            rejected[kind] = rejected.get(kind, 0) + 1
            continue
        path = tmp_path / f"{i}_{kind}.tflite"
        path.write_bytes(data)
        survivors.append(str(path))
    # truncated and random files never pass; flips in weight data legitimately do
    assert rejected["truncate"] == sum(k == "truncate" for k, _ in cases)
    assert rejected["random"] == sum(k == "random" for k, _ in cases)
    proc = subprocess.run(
        [sys.executable, "-c", _SMOKE_CHILD, *survivors], capture_output=True, text=True
    )
    last = [ln for ln in proc.stdout.splitlines() if ln.startswith("START")][-1:]
    assert proc.returncode == 0, f"runtime crashed ({proc.returncode}) on {last}"


def _mutated(mutate) -> bytes:
    fb, m = _model_t(write_tflite(_graph("pool")))
    mutate(fb, m, {t.name.decode(): i for i, t in enumerate(m.subgraphs[0].tensors)})
    return _repack(m)


def _op(fb, m, kind: str):
    code = getattr(fb.BuiltinOperator, kind)
    return next(
        op for op in m.subgraphs[0].operators if m.operatorCodes[op.opcodeIndex].builtinCode == code
    )


def _set_stride(fb, m, idx) -> None:
    _op(fb, m, "CONV_2D").builtinOptions.strideW = 0


def _set_buffer(fb, m, idx) -> None:
    m.subgraphs[0].tensors[idx["conv_w"]].buffer = 99


def _set_opcode(fb, m, idx) -> None:
    m.subgraphs[0].operators[0].opcodeIndex = 7


def _set_input(fb, m, idx) -> None:
    op = m.subgraphs[0].operators[1]
    op.inputs = [250, *list(op.inputs)[1:]]


def _set_shape(fb, m, idx) -> None:
    m.subgraphs[0].tensors[idx["fc_w"]].shape = [10, 16]


def _set_code(fb, m, idx) -> None:
    m.operatorCodes[0].builtinCode = m.operatorCodes[0].deprecatedBuiltinCode = 25  # SOFTMAX


def _set_scales(fb, m, idx) -> None:
    q = m.subgraphs[0].tensors[idx["conv_w"]].quantization
    q.scale, q.zeroPoint = list(q.scale)[:3], list(q.zeroPoint)[:3]


def _set_order(fb, m, idx) -> None:
    ops = m.subgraphs[0].operators
    ops[0], ops[1] = ops[1], ops[0]


def _set_reshape(fb, m, idx) -> None:
    _op(fb, m, "RESHAPE").inputs = [idx["avgpool"], -1]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (_set_stride, "strides"),
        (_set_buffer, "buffer index"),
        (_set_opcode, "opcode index"),
        (_set_input, "out of range"),
        (_set_shape, "holds"),
        (_set_code, "not allowed"),
        (_set_scales, "scales"),
        (_set_order, "read before it is written"),
        (_set_reshape, "inputs"),
    ],
)
def test_semantic_corruption_is_named(mutate, message: str) -> None:
    with pytest.raises(ModelFileError, match=message):
        read_tflite(_mutated(mutate))
