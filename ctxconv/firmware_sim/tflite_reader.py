"""Parse a .tflite flatbuffer back into a ``BlockGraph``.

The firmware simulator runs whatever file would be flashed, so it reads the file, not
the exporter's in-memory graph. Any damage (truncation, random bytes, flipped bits)
must surface as ``ModelFileError``: every vector length is checked against the file
size before it is iterated, every index against its table, and any other failure of
the generated flatbuffer accessors is converted, so a bad file can neither hang the
reader nor escape as an unrelated exception.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from ctxconv.export.ir import SUPPORTED_OPS, BlockGraph, ModelFileError, Op, Quant, Tensor

_IDENTIFIER = b"TFL3"
_MAX_RANK = 8
_MAX_ELEMENTS = 1 << 28
_DTYPES = {"INT8": "int8", "INT32": "int32", "FLOAT32": "float32"}
_ARITY = {  # (min inputs, max inputs) as stored in the file
    "CONV_2D": (2, 3),
    "FULLY_CONNECTED": (2, 3),
    "MAX_POOL_2D": (1, 1),
    "AVERAGE_POOL_2D": (1, 1),
    "ADD": (2, 2),
    "RESHAPE": (1, 2),
}


def _schema() -> ModuleType:
    """The flatc-generated TFLite schema module (tflite-micro's, else LiteRT's)."""
    try:
        from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb
    except ImportError:  # pragma: no cover - depends on the installed wheels
        from ai_edge_litert import schema_py_generated as fb
    return fb


class _Reader:
    """One parse of one file; ``fail`` raises ModelFileError prefixed with the file name."""

    def __init__(self, data: bytes, name: str) -> None:
        self.data = data
        self.name = name
        self.fb = _schema()
        self.codes = {v: k for k, v in vars(self.fb.BuiltinOperator).items() if k.isupper()}
        self.types = {v: k for k, v in vars(self.fb.TensorType).items() if k.isupper()}

    def fail(self, msg: str) -> ModelFileError:
        return ModelFileError(f"model {self.name!r}: {msg}")

    def count(self, n: int, what: str, elem_bytes: int = 4) -> int:
        """A vector length that cannot exceed what the file could possibly hold."""
        if n < 0 or n * elem_bytes > len(self.data):
            raise self.fail(f"{what} claims {n} entries, more than a {len(self.data)}-byte file")
        return n

    # ------------------------------------------------------------------------ model

    def read(self) -> BlockGraph:
        fb = self.fb
        if len(self.data) < 8:
            raise self.fail(f"file is {len(self.data)} bytes, too short for a flatbuffer")
        if self.data[4:8] != _IDENTIFIER:
            raise self.fail(
                f"file identifier is {self.data[4:8]!r}, expected {_IDENTIFIER!r} (not a .tflite)"
            )
        model = fb.Model.GetRootAs(self.data, 0)
        if model.Version() != 3:
            raise self.fail(f"schema version {model.Version()} is not 3")
        n_sub = self.count(model.SubgraphsLength(), "subgraph list")
        if n_sub != 1:
            raise self.fail(f"expected exactly one subgraph, found {n_sub}")
        opcodes = [
            self.opcode(model.OperatorCodes(i))
            for i in range(self.count(model.OperatorCodesLength(), "operator code list"))
        ]
        n_buf = self.count(model.BuffersLength(), "buffer list")
        sub = model.Subgraphs(0)
        if sub is None:
            raise self.fail("subgraph 0 is missing")
        n_t = self.count(sub.TensorsLength(), "tensor list")
        tensors: list[Tensor] = []
        taken: set[str] = set()
        for i in range(n_t):
            t = self.tensor(sub.Tensors(i), i, model, n_buf)
            if t.name in taken:  # names key the IR; keep every tensor reachable
                t.name = f"{t.name}#{i}"
            taken.add(t.name)
            tensors.append(t)

        def tensor_at(idx: int, what: str) -> Tensor:
            if not 0 <= idx < n_t:
                raise self.fail(f"{what} refers to tensor {idx}, but there are {n_t}")
            return tensors[idx]

        ops: list[Op] = []
        shape_inputs: set[str] = set()
        for i in range(self.count(sub.OperatorsLength(), "operator list")):
            op, shape_name = self.operator(sub.Operators(i), i, opcodes, tensor_at)
            ops.append(op)
            if shape_name:
                shape_inputs.add(shape_name)
        inputs = [
            tensor_at(int(j), "subgraph input").name
            for j in self.int_vector(sub.InputsLength(), sub.Inputs, "subgraph inputs")
        ]
        outputs = [
            tensor_at(int(j), "subgraph output").name
            for j in self.int_vector(sub.OutputsLength(), sub.Outputs, "subgraph outputs")
        ]
        used = {n for op in ops for n in op.inputs + op.outputs} | set(inputs) | set(outputs)
        # RESHAPE's shape constant is a file detail: the IR keeps the target in options.
        keep = {t.name: t for t in tensors if t.name in used or t.name not in shape_inputs}
        raw_name = sub.Name()
        graph_name = raw_name.decode("utf-8") if raw_name else self.name
        graph = BlockGraph(graph_name, keep, ops, inputs, outputs)
        try:
            graph.validate()
            check_runnable(graph)
        except ValueError as exc:
            raise self.fail(str(exc)) from None
        return graph

    def opcode(self, oc: Any) -> str:
        if oc is None:
            raise self.fail("operator code entry is missing")
        code = max(int(oc.BuiltinCode()), int(oc.DeprecatedBuiltinCode()))
        kind = self.codes.get(code, f"builtin code {code}")
        return kind

    def int_vector(self, n: int, get: Any, what: str) -> list[int]:
        return [int(get(j)) for j in range(self.count(n, what))]

    # ----------------------------------------------------------------------- tensors

    def tensor(self, ft: Any, i: int, model: Any, n_buf: int) -> Tensor:
        if ft is None:
            raise self.fail(f"tensor {i} is missing")
        raw = ft.Name()
        name = raw.decode("utf-8") if raw else f"tensor{i}"
        tname = self.types.get(ft.Type(), f"type {ft.Type()}")
        if tname not in _DTYPES:
            raise self.fail(f"tensor {name!r} has unsupported dtype {tname}")
        dtype = _DTYPES[tname]
        shape = tuple(self.int_vector(ft.ShapeLength(), ft.Shape, f"tensor {name!r} shape"))
        if len(shape) > _MAX_RANK or any(d < 1 for d in shape):
            raise self.fail(f"tensor {name!r} has invalid shape {shape}")
        n_el = 1
        for d in shape:
            n_el *= d
            if n_el > _MAX_ELEMENTS:
                raise self.fail(f"tensor {name!r} shape {shape} is implausibly large")
        quant = self.quant(ft.Quantization(), name, shape)
        data = self.constant(ft.Buffer(), model, n_buf, name, dtype, shape)
        return Tensor(name, shape, dtype, quant, data)

    def quant(self, q: Any, name: str, shape: tuple[int, ...]) -> Quant | None:
        if q is None:
            return None
        n_s = self.count(q.ScaleLength(), f"tensor {name!r} scales")
        n_z = self.count(q.ZeroPointLength(), f"tensor {name!r} zero points", 8)
        if n_s == 0:
            return None
        scale = np.array(q.ScaleAsNumpy(), np.float32).reshape(-1)
        zp = np.array(q.ZeroPointAsNumpy(), np.int64).reshape(-1) if n_z else np.zeros(0, np.int64)
        if zp.size != scale.size:
            raise self.fail(f"tensor {name!r}: {scale.size} scales but {zp.size} zero points")
        if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
            raise self.fail(f"tensor {name!r}: scales must be finite and positive")
        axis = None
        if scale.size > 1:
            axis = int(q.QuantizedDimension())
            if not 0 <= axis < len(shape) or shape[axis] != scale.size:
                raise self.fail(
                    f"tensor {name!r}: {scale.size} scales on axis {axis} of shape {shape}"
                )
        return Quant(scale, zp, axis)

    def constant(
        self, idx: int, model: Any, n_buf: int, name: str, dtype: str, shape: tuple[int, ...]
    ) -> np.ndarray | None:
        if not 0 <= idx < n_buf:
            raise self.fail(f"tensor {name!r} refers to buffer {idx}, but there are {n_buf}")
        buf = model.Buffers(idx)
        if buf is None:
            raise self.fail(f"buffer {idx} of tensor {name!r} is missing")
        offset, size = int(buf.Offset()), int(buf.Size())
        if offset > 1:  # data stored after the flatbuffer (models over 2 GB)
            if offset + size > len(self.data):
                raise self.fail(f"buffer {idx} of tensor {name!r} lies past the end of the file")
            raw = np.frombuffer(self.data, np.uint8, size, offset)
        else:
            n = self.count(buf.DataLength(), f"buffer {idx}", 1)
            if n == 0:
                return None
            raw = buf.DataAsNumpy()
        itemsize = np.dtype(dtype).itemsize
        expect = itemsize * int(np.prod(shape, dtype=np.int64))
        if raw.size == 0:
            return None
        if raw.size != expect:
            raise self.fail(
                f"tensor {name!r} {dtype}{list(shape)} needs {expect} bytes, buffer {idx} "
                f"holds {raw.size}"
            )
        le = np.dtype(dtype).newbyteorder("<")
        return np.frombuffer(raw.tobytes(), le).astype(dtype).reshape(shape)

    # --------------------------------------------------------------------- operators

    def operator(
        self, fop: Any, i: int, opcodes: list[str], tensor_at: Any
    ) -> tuple[Op, str | None]:
        if fop is None:
            raise self.fail(f"operator {i} is missing")
        oi = int(fop.OpcodeIndex())
        if not 0 <= oi < len(opcodes):
            raise self.fail(f"operator {i} uses opcode {oi}, but there are {len(opcodes)}")
        kind = opcodes[oi]
        if kind not in SUPPORTED_OPS:
            raise self.fail(f"operator {i} is {kind}, supported: {sorted(SUPPORTED_OPS)}")
        ins = self.int_vector(fop.InputsLength(), fop.Inputs, f"operator {i} inputs")
        outs = self.int_vector(fop.OutputsLength(), fop.Outputs, f"operator {i} outputs")
        lo, hi = _ARITY[kind]
        while ins and ins[-1] == -1:  # trailing optional inputs left out
            ins.pop()
        if not lo <= len(ins) <= hi or len(outs) != 1 or any(j < 0 for j in ins):
            raise self.fail(f"operator {i} ({kind}) has inputs {ins} and outputs {outs}")
        in_t = [tensor_at(j, f"operator {i} ({kind}) input") for j in ins]
        out_t = tensor_at(outs[0], f"operator {i} ({kind}) output")
        options, shape_name = self.options(fop, i, kind, in_t)
        if shape_name:
            in_t = in_t[:1]
        op = Op(kind, [t.name for t in in_t], [out_t.name], options)
        return op, shape_name

    def options(
        self, fop: Any, i: int, kind: str, in_t: list[Tensor]
    ) -> tuple[dict[str, Any], str | None]:
        fb = self.fb
        where = f"operator {i} ({kind})"
        table = fop.BuiltinOptions()
        expected = {
            "CONV_2D": (fb.BuiltinOptions.Conv2DOptions, fb.Conv2DOptions),
            "MAX_POOL_2D": (fb.BuiltinOptions.Pool2DOptions, fb.Pool2DOptions),
            "AVERAGE_POOL_2D": (fb.BuiltinOptions.Pool2DOptions, fb.Pool2DOptions),
            "FULLY_CONNECTED": (
                fb.BuiltinOptions.FullyConnectedOptions,
                fb.FullyConnectedOptions,
            ),
            "ADD": (fb.BuiltinOptions.AddOptions, fb.AddOptions),
            "RESHAPE": (fb.BuiltinOptions.ReshapeOptions, fb.ReshapeOptions),
        }[kind]
        opt = None
        if table is not None and fop.BuiltinOptionsType() != 0:
            if fop.BuiltinOptionsType() != expected[0]:
                raise self.fail(f"{where} carries options of union type {fop.BuiltinOptionsType()}")
            opt = expected[1]()
            opt.Init(table.Bytes, table.Pos)
        if opt is None and kind in ("CONV_2D", "MAX_POOL_2D", "AVERAGE_POOL_2D"):
            raise self.fail(f"{where} has no options")
        out: dict[str, Any] = {}
        if kind in ("CONV_2D", "FULLY_CONNECTED", "ADD", "MAX_POOL_2D", "AVERAGE_POOL_2D"):
            act = 0 if opt is None else int(opt.FusedActivationFunction())
            if act not in (fb.ActivationFunctionType.NONE, fb.ActivationFunctionType.RELU):
                raise self.fail(f"{where}: fused activation {act} is not supported (NONE, RELU)")
            relu = act == fb.ActivationFunctionType.RELU
            if kind in ("CONV_2D", "FULLY_CONNECTED", "ADD"):
                out["relu"] = relu
            elif relu:
                raise self.fail(f"{where}: a fused RELU on pooling is not supported")
        if kind in ("CONV_2D", "MAX_POOL_2D", "AVERAGE_POOL_2D"):
            pad = int(opt.Padding())
            if pad not in (fb.Padding.SAME, fb.Padding.VALID):
                raise self.fail(f"{where}: padding {pad} is not SAME or VALID")
            out["stride"] = (int(opt.StrideH()), int(opt.StrideW()))
            out["padding"] = "SAME" if pad == fb.Padding.SAME else "VALID"
            if min(out["stride"]) < 1:
                raise self.fail(f"{where}: stride {out['stride']} must be >= 1")
            if kind == "CONV_2D":
                if (int(opt.DilationHFactor()), int(opt.DilationWFactor())) != (1, 1):
                    raise self.fail(f"{where}: dilation is not supported")
            else:
                out["filter"] = (int(opt.FilterHeight()), int(opt.FilterWidth()))
                if min(out["filter"]) < 1:
                    raise self.fail(f"{where}: filter {out['filter']} must be >= 1")
        if kind == "FULLY_CONNECTED" and opt is not None:
            if int(opt.WeightsFormat()) != 0 or bool(opt.KeepNumDims()):
                raise self.fail(f"{where}: only default weights format without keep_num_dims")
        shape_name = None
        if kind == "RESHAPE":
            shape: list[int] | None = None
            if opt is not None and opt.NewShapeLength() > 0:
                shape = self.int_vector(opt.NewShapeLength(), opt.NewShape, f"{where} new_shape")
            if len(in_t) == 2:
                st = in_t[1]
                if st.data is None or st.dtype != "int32" or len(st.shape) != 1:
                    raise self.fail(f"{where}: shape input {st.name!r} is not an int32 constant")
                shape_name = st.name
                if shape is None:
                    shape = [int(v) for v in st.data]
            if shape is None:
                raise self.fail(f"{where}: no target shape")
            out["shape"] = tuple(shape)
        return out, shape_name


def _conv_out(size: int, k: int, stride: int, padding: str) -> int:
    if padding == "SAME":
        return (size + stride - 1) // stride
    return (size + stride - k) // stride


def _check_dataflow(graph: BlockGraph) -> None:
    """Activations are produced once, by an earlier op or as graph inputs."""
    t = graph.tensors
    ready = set(graph.inputs)
    for name in graph.inputs:
        if t[name].is_constant:
            raise ValueError(f"graph input {name!r} is a constant")
    for op in graph.ops:
        for name in op.inputs:
            if not t[name].is_constant and name not in ready:
                raise ValueError(f"op {op.kind}: input {name!r} is used before it is produced")
        for name in op.outputs:
            if t[name].is_constant or name in ready:
                raise ValueError(f"op {op.kind}: output {name!r} is a constant or written twice")
            ready.add(name)
    for name in graph.outputs:
        if name not in ready:
            raise ValueError(f"graph output {name!r} is never produced")


def _check_quant(tensor: Tensor) -> None:
    """Zero points must fit the storage type; int32 (bias) zero points are 0."""
    q = tensor.quant
    if q is None:
        return
    lo, hi = {"int8": (-128, 127), "int32": (0, 0), "float32": (0, 0)}[tensor.dtype]
    if np.any(q.zero_point < lo) or np.any(q.zero_point > hi):
        raise ValueError(f"tensor {tensor.name!r}: zero point outside [{lo}, {hi}]")


def check_runnable(graph: BlockGraph) -> None:
    """Raise ValueError unless the graph is one the kernels can run: dataflow in order,
    declared shapes and dtypes consistent with the inputs, quantization in range, so a
    file whose numbers were damaged cannot reach the kernels."""
    _check_dataflow(graph)
    for tensor in graph.tensors.values():
        _check_quant(tensor)
    t = graph.tensors
    for op in graph.ops:
        x, out = t[op.inputs[0]], t[op.outputs[0]]
        where = f"op {op.kind} -> {out.name!r}"
        o = op.options
        if op.kind == "RESHAPE":
            if int(np.prod(x.shape)) != int(np.prod(out.shape)) or x.dtype != out.dtype:
                raise ValueError(f"{where}: cannot reshape {x.dtype}{x.shape} to {out.shape}")
            continue
        if x.dtype not in ("int8", "float32") or out.dtype != x.dtype:
            raise ValueError(f"{where}: input {x.dtype} / output {out.dtype} not supported")
        if x.dtype == "int8" and (x.quant is None or out.quant is None):
            raise ValueError(f"{where}: int8 activations need quantization parameters")
        if op.kind in ("CONV_2D", "MAX_POOL_2D", "AVERAGE_POOL_2D"):
            if len(x.shape) != 4:
                raise ValueError(f"{where}: input {x.name!r} {x.shape} is not NHWC")
            _, h, w, c = x.shape
            if op.kind == "CONV_2D":
                wt = t[op.inputs[1]]
                if len(wt.shape) != 4 or wt.shape[3] != c or wt.data is None:
                    raise ValueError(f"{where}: weight {wt.shape} is not a constant OHWI for C={c}")
                c, kh, kw = wt.shape[:3]
            else:
                kh, kw = o["filter"]
            sh, sw = o["stride"]
            expect = (1, _conv_out(h, kh, sh, o["padding"]), _conv_out(w, kw, sw, o["padding"]), c)
        elif op.kind == "FULLY_CONNECTED":
            wt = t[op.inputs[1]]
            if len(wt.shape) != 2 or wt.data is None or int(np.prod(x.shape)) != wt.shape[1]:
                raise ValueError(f"{where}: weight {wt.shape} does not match input {x.shape}")
            expect = (1, wt.shape[0])
        else:  # ADD
            b = t[op.inputs[1]]
            if b.dtype != x.dtype or (x.dtype == "int8" and b.quant is None):
                raise ValueError(f"{where}: operands differ in dtype or lack quantization")
            expect = tuple(np.broadcast_shapes(x.shape, b.shape))
        if tuple(out.shape) != tuple(expect):
            raise ValueError(f"{where}: declared shape {out.shape}, inputs give {expect}")
        if op.kind in ("CONV_2D", "FULLY_CONNECTED"):
            wt = t[op.inputs[1]]
            channels = wt.shape[0]
            if len(op.inputs) > 2:
                b = t[op.inputs[2]]
                if b.data is None or tuple(b.shape) != (channels,):
                    raise ValueError(f"{where}: bias {b.shape} is not a constant ({channels},)")
            if x.dtype == "int8":
                if wt.dtype != "int8" or wt.quant is None or np.any(wt.quant.zero_point != 0):
                    raise ValueError(f"{where}: weight must be symmetric quantized int8")
                if wt.quant.scale.size not in (1, channels):
                    raise ValueError(f"{where}: {wt.quant.scale.size} weight scales")
            bias_dtype = "int32" if x.dtype == "int8" else "float32"
            if len(op.inputs) > 2 and t[op.inputs[2]].dtype != bias_dtype:
                raise ValueError(f"{where}: bias must be {bias_dtype}")
            if x.dtype == "float32" and wt.dtype != "float32":
                raise ValueError(f"{where}: float op needs float32 weights")


def read_tflite(data: bytes, name: str = "block") -> BlockGraph:
    """Parse .tflite bytes into a ``BlockGraph``; any damage raises ``ModelFileError``.

    The graph takes the subgraph name stored in the file; ``name`` is used when the file
    has none and to label error messages. RESHAPE shape-constant inputs become the
    op's ``shape`` option, as in the IR.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ModelFileError(f"model {name!r}: expected bytes, got {type(data).__name__}")
    raw = bytes(data)
    reader = _Reader(raw, name)
    try:
        return reader.read()
    except ModelFileError:
        raise
    except Exception as exc:  # any failure of the flatbuffer accessors means a bad file
        raise reader.fail(
            f"malformed or truncated flatbuffer ({type(exc).__name__}: {exc})"
        ) from None
