"""Serialise a ``BlockGraph`` to a TFLite flatbuffer without TensorFlow.

The flatbuffer is built with the flatc-generated schema module shipped in the
tflite-micro (or LiteRT) wheel, so the file follows the official schema exactly.
Constant data is 16-byte aligned inside the file, as TFLM and the LiteRT
reference kernels expect (same result as TFLM's ``tflite_flatbuffer_align`` tool).

``check_graph`` holds the graph rules both writers rely on (arity, dtypes, shapes,
quantization); the ONNX writer calls it too, so both files describe the same graph.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

import numpy as np

from ctxconv.blockgraph import ops
from ctxconv.blockgraph.ir import L2_NORM_QUANT, BlockGraph, Op, Tensor
from ctxconv.blockgraph.tflite.schema import schema

#: Alignment of constant buffers inside the file (bytes).
BUFFER_ALIGNMENT = 16

#: TFLite operator version per (op, graph dtype), following tflite op_version.cc.
_OP_VERSIONS: dict[str, dict[str, int]] = {
    "CONV_2D": {"int8": 3, "float32": 1},
    "FULLY_CONNECTED": {"int8": 4, "float32": 1},
    "MAX_POOL_2D": {"int8": 2, "float32": 1},
    "AVERAGE_POOL_2D": {"int8": 2, "float32": 1},
    "ADD": {"int8": 2, "float32": 1},
    "RESHAPE": {"int8": 1, "float32": 1},
    "MUL": {"int8": 2, "float32": 1},
    "MEAN": {"int8": 2, "float32": 1},
    "L2_NORMALIZATION": {"int8": 2, "float32": 1},
}

_ARITY: dict[str, tuple[int, int]] = {
    "MAX_POOL_2D": (1, 1),
    "AVERAGE_POOL_2D": (1, 1),
    "CONV_2D": (3, 1),
    "FULLY_CONNECTED": (3, 1),
    "ADD": (2, 1),
    "RESHAPE": (1, 1),
    "MUL": (2, 1),
    "MEAN": (1, 1),
    "L2_NORMALIZATION": (1, 1),
}

#: ``OperatorCode.deprecated_builtin_code`` is an int8; larger codes store 127 there.
_MAX_DEPRECATED_CODE = 127

_TENSOR_TYPES = {"float32": "FLOAT32", "int32": "INT32", "int8": "INT8"}


# --------------------------------------------------------------------------- graph rules


def graph_dtype(graph: BlockGraph) -> str:
    """``"int8"`` or ``"float32"``: the dtype of the graph's activations."""
    dtypes = {t.dtype for t in graph.activations()}
    if dtypes == {"int8"}:
        return "int8"
    if dtypes == {"float32"}:
        return "float32"
    raise ValueError(
        f"block {graph.name!r}: activations must be all int8 or all float32, got {sorted(dtypes)}"
    )


def _pair(value: Any, what: str, op: Op) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"op {op.kind}: option {what!r} must be a pair, got {value!r}") from exc
    if h < 1 or w < 1:
        raise ValueError(f"op {op.kind}: option {what!r} must be >= 1, got {value!r}")
    return h, w


def _padding(op: Op) -> str:
    pad = str(op.options["padding"]).upper()
    if pad not in ("SAME", "VALID"):
        raise ValueError(f"op {op.kind}: padding must be SAME or VALID, got {pad!r}")
    return pad


def conv_out_size(size: int, kernel: int, stride: int, padding: str) -> int:
    """Output length of one spatial axis (TF semantics)."""
    if padding == "SAME":
        return math.ceil(size / stride)
    return max(0, math.ceil((size - kernel + 1) / stride))


def same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF SAME padding (before, after) of one axis; the odd pixel goes after."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def broadcast_shape(a: tuple[int, ...], b: tuple[int, ...], kind: str = "ADD"
                    ) -> tuple[int, ...]:
    try:
        return tuple(int(d) for d in np.broadcast_shapes(a, b))
    except ValueError as exc:
        raise ValueError(f"op {kind}: shapes {a} and {b} do not broadcast") from exc


def mean_axes(op: Op, rank: int) -> tuple[int, ...]:
    """The reduced axes of a MEAN, checked: distinct, in 1..rank-1 (axis 0 is the batch)."""
    axes = tuple(int(a) for a in op.options["axes"])
    if not axes or len(set(axes)) != len(axes) or any(not 1 <= a < rank for a in axes):
        raise ValueError(f"op MEAN: axes {axes} must be distinct and in 1..{rank - 1}")
    return axes


def reduced_shape(shape: tuple[int, ...], axes: tuple[int, ...], keep_dims: bool
                  ) -> tuple[int, ...]:
    """Output shape of a reduction over ``axes``."""
    if keep_dims:
        return tuple(1 if i in axes else int(d) for i, d in enumerate(shape))
    return tuple(int(d) for i, d in enumerate(shape) if i not in axes)


def _expect_shape(op: Op, t: Tensor, shape: tuple[int, ...]) -> None:
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"op {op.kind}: tensor {t.name!r} has shape {t.shape}, expected {shape}")


def _check_quant(graph: BlockGraph, t: Tensor, dtype: str) -> None:
    if dtype == "float32":
        if t.dtype != "float32" or t.quant is not None:
            raise ValueError(f"float graph {graph.name!r}: tensor {t.name!r} must be unquantized")
        return
    q = t.quant
    if q is None:
        raise ValueError(f"int8 graph {graph.name!r}: tensor {t.name!r} lacks quantization")
    scale = np.asarray(q.scale, np.float64).reshape(-1)
    zp = np.asarray(q.zero_point).reshape(-1)
    if scale.size == 0 or scale.shape != zp.shape:
        raise ValueError(f"tensor {t.name!r}: scale and zero_point sizes differ or are empty")
    if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
        raise ValueError(f"tensor {t.name!r}: scales must be finite and > 0")
    if q.axis is not None:
        if not 0 <= q.axis < len(t.shape) or t.shape[q.axis] != scale.size:
            raise ValueError(
                f"tensor {t.name!r}: per-channel axis {q.axis} does not match shape {t.shape} "
                f"with {scale.size} scales"
            )
    elif scale.size != 1:
        raise ValueError(f"tensor {t.name!r}: per-tensor quantization needs exactly one scale")
    info = np.iinfo(t.dtype) if t.dtype in ("int8", "int32") else None
    if info is None:
        raise ValueError(f"int8 graph {graph.name!r}: tensor {t.name!r} has dtype {t.dtype}")
    if np.any(zp < info.min) or np.any(zp > info.max):
        raise ValueError(f"tensor {t.name!r}: zero point out of {t.dtype} range")


def _check_data(t: Tensor) -> None:
    if t.data is None:
        return
    data = np.asarray(t.data)
    if tuple(data.shape) != tuple(t.shape) or data.dtype != np.dtype(t.dtype):
        raise ValueError(
            f"constant {t.name!r}: data is {data.dtype}{data.shape}, declared {t.dtype}{t.shape}"
        )


def _check_bias(op: Op, x: Tensor, w: Tensor, b: Tensor, channels: int) -> None:
    _expect_shape(op, b, (channels,))
    if x.quant is None or w.quant is None or b.quant is None:
        return
    if b.dtype != "int32" or np.any(b.quant.zero_point != 0):
        raise ValueError(f"op {op.kind}: bias {b.name!r} must be int32 with zero point 0")
    expect = np.float64(x.quant.scale[0]) * np.asarray(w.quant.scale, np.float64)
    got = np.asarray(b.quant.scale, np.float64)
    if got.size != expect.size and not (got.size == channels and expect.size == 1):
        raise ValueError(f"op {op.kind}: bias {b.name!r} has {got.size} scales")
    if not np.allclose(got, expect, rtol=1e-5, atol=0):
        raise ValueError(
            f"op {op.kind}: bias {b.name!r} scale must equal input_scale * weight_scale"
        )


def _check_weight(op: Op, w: Tensor) -> None:
    if w.quant is None:
        return
    if w.dtype != "int8" or np.any(np.asarray(w.quant.zero_point) != 0):
        raise ValueError(f"op {op.kind}: weight {w.name!r} must be int8 with zero point 0")
    if w.quant.axis not in (None, 0):
        raise ValueError(f"op {op.kind}: weight {w.name!r} per-channel axis must be 0")


def _same_quant(op: Op, a: Tensor, b: Tensor) -> None:
    if a.quant is None or b.quant is None:
        return
    same_scale = math.isclose(float(a.quant.scale[0]), float(b.quant.scale[0]), rel_tol=1e-6)
    if not (same_scale and a.quant.zero_point[0] == b.quant.zero_point[0]):
        raise ValueError(
            f"op {op.kind}: int8 {op.kind} needs equal input/output quantization "
            f"({a.name!r} and {b.name!r} differ)"
        )


def _check_op(graph: BlockGraph, op: Op) -> None:
    n_in, n_out = _ARITY[op.kind]
    if len(op.inputs) != n_in or len(op.outputs) != n_out:
        raise ValueError(
            f"op {op.kind}: needs {n_in} inputs and {n_out} output, "
            f"got {len(op.inputs)} and {len(op.outputs)}"
        )
    t = [graph.tensors[n] for n in op.inputs]
    out = graph.tensors[op.outputs[0]]
    if out.is_constant:
        raise ValueError(f"op {op.kind}: output {out.name!r} is a constant")
    x = t[0]
    if op.kind in ("MAX_POOL_2D", "AVERAGE_POOL_2D", "CONV_2D"):
        if len(x.shape) != 4:
            raise ValueError(f"op {op.kind}: input {x.name!r} must be NHWC, got shape {x.shape}")
        _, h, w, c = x.shape
        sh, sw = _pair(op.options["stride"], "stride", op)
        pad = _padding(op)
        if op.kind == "CONV_2D":
            wt, b = t[1], t[2]
            if not wt.is_constant or not b.is_constant:
                raise ValueError("op CONV_2D: weight and bias must be constants")
            if len(wt.shape) != 4 or wt.shape[3] != c:
                raise ValueError(f"op CONV_2D: weight {wt.name!r} {wt.shape} is not OHWI for C={c}")
            o, kh, kw = wt.shape[:3]
            _check_weight(op, wt)
            _check_bias(op, x, wt, b, o)
        else:
            kh, kw = _pair(op.options["filter"], "filter", op)
            o = c
            _same_quant(op, x, out)
        shape = (1, conv_out_size(h, kh, sh, pad), conv_out_size(w, kw, sw, pad), o)
        _expect_shape(op, out, shape)
    elif op.kind == "FULLY_CONNECTED":
        wt, b = t[1], t[2]
        if not wt.is_constant or not b.is_constant:
            raise ValueError("op FULLY_CONNECTED: weight and bias must be constants")
        if len(wt.shape) != 2:
            raise ValueError(f"op FULLY_CONNECTED: weight {wt.name!r} must be (out, in)")
        k, n = wt.shape
        if x.shape != (1, n):
            raise ValueError(f"op FULLY_CONNECTED: input {x.name!r} {x.shape} must be (1, {n})")
        _check_weight(op, wt)
        _check_bias(op, x, wt, b, k)
        _expect_shape(op, out, (1, k))
    elif op.kind in ("ADD", "MUL"):
        if x.is_constant:
            raise ValueError(f"op {op.kind}: the first input must be an activation")
        _expect_shape(op, out, broadcast_shape(tuple(x.shape), tuple(t[1].shape), op.kind))
    elif op.kind == "MEAN":
        keep = op.options["keep_dims"]
        if keep not in (True, False):
            raise ValueError("op MEAN: option keep_dims must be a bool")
        _expect_shape(op, out, reduced_shape(tuple(x.shape), mean_axes(op, len(x.shape)), keep))
    elif op.kind == "L2_NORMALIZATION":
        if len(x.shape) > 4:
            raise ValueError(f"op L2_NORMALIZATION: input {x.name!r} has rank > 4")
        _expect_shape(op, out, tuple(x.shape))
        q = out.quant
        if q is not None and (not math.isclose(float(q.scale[0]), L2_NORM_QUANT[0], rel_tol=1e-6)
                              or int(q.zero_point[0]) != L2_NORM_QUANT[1]):
            raise ValueError(f"op L2_NORMALIZATION: int8 output {out.name!r} must have scale "
                             f"1/128 and zero point 0 (TFLite's fixed output quantization)")
    elif op.kind == "RESHAPE":
        target = tuple(int(d) for d in op.options["shape"])
        if target != tuple(out.shape):
            raise ValueError(f"op RESHAPE: option shape {target} != output shape {out.shape}")
        if int(np.prod(x.shape)) != int(np.prod(target)):
            raise ValueError(f"op RESHAPE: cannot reshape {x.shape} to {target}")
        if target[:1] != (1,):
            raise ValueError(f"op RESHAPE: target {target} must keep the leading batch dim 1")
        _same_quant(op, x, out)
    if op.kind in ("CONV_2D", "FULLY_CONNECTED", "ADD", "MUL"):
        if op.options["relu"] not in (True, False):
            raise ValueError(f"op {op.kind}: option relu must be a bool")


def check_graph(graph: BlockGraph) -> str:
    """Validate ``graph`` for export; return its dtype (``"int8"``/``"float32"``).

    Raises ValueError naming the op or tensor at fault. Activations are produced
    once and used only after they are produced (ops are in execution order).
    """
    ops.validate_structure(graph)
    if not graph.ops:
        raise ValueError(f"block {graph.name!r} has no ops")
    dtype = graph_dtype(graph)
    for t in graph.tensors.values():
        if t.dtype not in _TENSOR_TYPES:
            raise ValueError(f"tensor {t.name!r}: dtype {t.dtype} is not supported")
        if any(int(d) < 1 for d in t.shape):
            raise ValueError(f"tensor {t.name!r}: shape {t.shape} has non-positive dims")
        _check_data(t)
        if t.dtype == "int32" and dtype == "int8":
            _check_quant(graph, t, "int8")
        elif t.dtype != "int32":
            _check_quant(graph, t, dtype)
        elif dtype == "float32":
            raise ValueError(f"float graph {graph.name!r}: tensor {t.name!r} is int32")
    for name in graph.inputs:
        if graph.tensors[name].is_constant:
            raise ValueError(f"graph input {name!r} is a constant")
        if graph.tensors[name].shape[:1] != (1,):
            raise ValueError(f"graph input {name!r} must have batch dim 1")
    ready = set(graph.inputs)
    for op in graph.ops:
        for name in op.inputs:
            if not graph.tensors[name].is_constant and name not in ready:
                raise ValueError(f"op {op.kind}: input {name!r} is used before it is produced")
        for name in op.outputs:
            if name in ready:
                raise ValueError(f"op {op.kind}: output {name!r} is produced twice")
            ready.add(name)
        _check_op(graph, op)
    for name in graph.outputs:
        if name not in ready:
            raise ValueError(f"graph output {name!r} is never produced")
    return dtype


# --------------------------------------------------------------------------- flatbuffer


def _aligned_buffer_type(fb: ModuleType) -> type:
    """A ``BufferT`` whose data vector starts on a ``BUFFER_ALIGNMENT`` boundary.

    The Python object API ignores the schema's ``force_align: 16`` on ``Buffer.data``;
    this subclass re-applies it. Because the builder aligns the file end to the
    largest alignment used, an offset aligned from the end is aligned from the start.
    """

    class AlignedBufferT(fb.BufferT):
        def Pack(self, builder: Any) -> int:  # noqa: N802 - flatc naming
            data_off = None
            if self.data is not None and len(self.data) > 0:
                raw = bytes(self.data)
                builder.StartVector(1, len(raw), BUFFER_ALIGNMENT)
                builder.head = builder.head - len(raw)
                builder.Bytes[builder.head : builder.head + len(raw)] = raw
                data_off = builder.EndVector()
            fb.BufferStart(builder)
            if data_off is not None:
                fb.BufferAddData(builder, data_off)
            return fb.BufferEnd(builder)

    return AlignedBufferT


def _quant_params(fb: ModuleType, t: Tensor) -> Any:
    if t.quant is None:
        return None
    q = fb.QuantizationParametersT()
    q.scale = [float(s) for s in np.asarray(t.quant.scale, np.float32).reshape(-1)]
    q.zeroPoint = [int(z) for z in np.asarray(t.quant.zero_point).reshape(-1)]
    q.quantizedDimension = int(t.quant.axis or 0)
    return q


def _activation(fb: ModuleType, op: Op) -> int:
    af = fb.ActivationFunctionType
    return af.RELU if op.options.get("relu", False) else af.NONE


def _options(fb: ModuleType, op: Op, new_shape: list[int] | None) -> tuple[int, Any]:
    """(BuiltinOptions union type, options object) for ``op``."""
    bo = fb.BuiltinOptions
    pad = {"SAME": fb.Padding.SAME, "VALID": fb.Padding.VALID}
    if op.kind in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
        o = fb.Pool2DOptionsT()
        o.padding = pad[_padding(op)]
        o.strideH, o.strideW = _pair(op.options["stride"], "stride", op)
        o.filterHeight, o.filterWidth = _pair(op.options["filter"], "filter", op)
        o.fusedActivationFunction = fb.ActivationFunctionType.NONE
        return bo.Pool2DOptions, o
    if op.kind == "CONV_2D":
        o = fb.Conv2DOptionsT()
        o.padding = pad[_padding(op)]
        o.strideH, o.strideW = _pair(op.options["stride"], "stride", op)
        o.dilationHFactor = o.dilationWFactor = 1
        o.fusedActivationFunction = _activation(fb, op)
        return bo.Conv2DOptions, o
    if op.kind == "FULLY_CONNECTED":
        o = fb.FullyConnectedOptionsT()
        o.fusedActivationFunction = _activation(fb, op)
        o.weightsFormat = fb.FullyConnectedOptionsWeightsFormat.DEFAULT
        o.keepNumDims = False
        return bo.FullyConnectedOptions, o
    if op.kind == "ADD":
        o = fb.AddOptionsT()
        o.fusedActivationFunction = _activation(fb, op)
        return bo.AddOptions, o
    if op.kind == "RESHAPE":
        o = fb.ReshapeOptionsT()
        o.newShape = list(new_shape or [])
        return bo.ReshapeOptions, o
    if op.kind == "MUL":
        o = fb.MulOptionsT()
        o.fusedActivationFunction = _activation(fb, op)
        return bo.MulOptions, o
    if op.kind == "MEAN":
        o = fb.ReducerOptionsT()
        o.keepDims = bool(op.options["keep_dims"])
        return bo.ReducerOptions, o
    if op.kind == "L2_NORMALIZATION":
        o = fb.L2NormOptionsT()
        o.fusedActivationFunction = fb.ActivationFunctionType.NONE
        return bo.L2NormOptions, o
    raise ValueError(f"op {op.kind!r} is not supported by the TFLite writer")


def _le_bytes(data: np.ndarray, dtype: str) -> bytes:
    return np.ascontiguousarray(data, np.dtype(dtype).newbyteorder("<")).tobytes()


def write_tflite(graph: BlockGraph, description: str = "ctxconv block") -> bytes:
    """Serialise ``graph`` to TFLite flatbuffer bytes (schema v3, identifier ``TFL3``).

    Buffer 0 is the empty sentinel; every constant has its own 16-byte aligned buffer;
    activations point at buffer 0. RESHAPE gets its target as an int32 shape constant
    (second input) as well as in ``ReshapeOptions.new_shape``; MEAN its axes as an int32
    constant (second input).
    """
    dtype = check_graph(graph)
    fb = schema()
    buffer_t = _aligned_buffer_type(fb)
    ttype = fb.TensorType

    buffers: list[Any] = [buffer_t()]
    tensors: list[Any] = []
    index: dict[str, int] = {}

    def add_tensor(t: Tensor) -> int:
        ft = fb.TensorT()
        ft.name = t.name
        ft.shape = [int(d) for d in t.shape]
        ft.type = getattr(ttype, _TENSOR_TYPES[t.dtype])
        ft.quantization = _quant_params(fb, t)
        ft.buffer = 0
        if t.data is not None:
            buf = buffer_t()
            buf.data = np.frombuffer(_le_bytes(t.data, t.dtype), np.uint8)
            ft.buffer = len(buffers)
            buffers.append(buf)
        index[t.name] = len(tensors)
        tensors.append(ft)
        return index[t.name]

    for t in graph.tensors.values():
        add_tensor(t)

    opcodes: list[Any] = []
    opcode_index: dict[str, int] = {}
    operators: list[Any] = []
    for op in graph.ops:
        code = getattr(fb.BuiltinOperator, op.kind)
        if op.kind not in opcode_index:
            oc = fb.OperatorCodeT()
            oc.builtinCode = code
            oc.deprecatedBuiltinCode = min(code, _MAX_DEPRECATED_CODE)
            oc.version = _OP_VERSIONS[op.kind][dtype]
            opcode_index[op.kind] = len(opcodes)
            opcodes.append(oc)
        inputs = [index[n] for n in op.inputs]
        new_shape = None
        if op.kind == "RESHAPE":
            new_shape = [int(d) for d in op.options["shape"]]
            shape_const = Tensor(
                name=f"{op.outputs[0]}/shape",
                shape=(len(new_shape),),
                dtype="int32",
                data=np.asarray(new_shape, np.int32),
            )
            if shape_const.name in index:
                raise ValueError(f"op RESHAPE: tensor name {shape_const.name!r} is taken")
            inputs.append(add_tensor(shape_const))
        if op.kind == "MEAN":
            axes = Tensor(name=f"{op.outputs[0]}/axes", shape=(len(op.options["axes"]),),
                          dtype="int32", data=np.asarray(op.options["axes"], np.int32))
            if axes.name in index:
                raise ValueError(f"op MEAN: tensor name {axes.name!r} is taken")
            inputs.append(add_tensor(axes))
        fop = fb.OperatorT()
        fop.opcodeIndex = opcode_index[op.kind]
        fop.inputs = inputs
        fop.outputs = [index[n] for n in op.outputs]
        fop.builtinOptionsType, fop.builtinOptions = _options(fb, op, new_shape)
        operators.append(fop)

    sub = fb.SubGraphT()
    sub.name = graph.name
    sub.tensors = tensors
    sub.inputs = [index[n] for n in graph.inputs]
    sub.outputs = [index[n] for n in graph.outputs]
    sub.operators = operators

    model = fb.ModelT()
    model.version = 3
    model.description = description
    model.operatorCodes = opcodes
    model.subgraphs = [sub]
    model.buffers = buffers

    import flatbuffers

    builder = flatbuffers.Builder(1024 + sum(t.nbytes for t in graph.constants()))
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())
