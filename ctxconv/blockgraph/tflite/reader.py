"""Read .tflite bytes into a validated ``BlockGraph``: the one reader of the format.

The export's runtime wrappers and the firmware simulator both read block files through
``read_tflite``. Runtimes (TFLM above all) do not verify flatbuffers: an out-of-range
offset, index or shape can make them read outside the model or the arena and crash the
process. So the reader checks in three stages, and any damage (truncation, random
bytes, flipped bits, hand edits) surfaces as ``ModelFileError`` naming the file:

1. bounds walk: every table, vector and string the runtimes read, with explicit bounds
   checks (what the C++ flatbuffers Verifier does), before the generated accessors
   touch them;
2. semantics, on the parsed flatbuffer: one subgraph of block ops, tensor types, shapes,
   buffer sizes, quantization, op options and dtypes as the TFLM kernels assume them,
   activations written before they are read;
3. the ``BlockGraph`` built from it (a RESHAPE's shape constant becomes the op's
   ``shape`` option, a MEAN's axes constant its ``axes`` option, as in the IR), checked
   by ``BlockGraph.validate`` and each op's own ``ops.<op>.validate`` (shapes, weights,
   axes, the L2 output quantization: the checks the interpreter and the C writer share).

Imports numpy, the standard library and the flatc-generated schema module only.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np

from ctxconv.blockgraph.ir import BlockGraph, ModelFileError, Op, Quant, Tensor
from ctxconv.blockgraph.ops import SUPPORTED, validate_graph
from ctxconv.blockgraph.tflite.schema import schema

#: Smallest and largest model the reader accepts (bytes).
MIN_MODEL_BYTES = 32
MAX_MODEL_BYTES = 1 << 30
MAX_RANK = 6
MAX_ELEMENTS = 1 << 28
IDENTIFIER = b"TFL3"

# TensorType -> numpy dtype: the types a block graph holds
_DTYPES: dict[int, str] = {0: "float32", 2: "int32", 9: "int8"}
_ZERO_POINTS = {"int8": (-128, 127), "int32": (0, 0), "float32": (0, 0)}

# op -> name of its BuiltinOptions table
_OPTIONS: dict[str, str] = {
    "CONV_2D": "Conv2DOptions",
    "MAX_POOL_2D": "Pool2DOptions",
    "AVERAGE_POOL_2D": "Pool2DOptions",
    "FULLY_CONNECTED": "FullyConnectedOptions",
    "ADD": "AddOptions",
    "RESHAPE": "ReshapeOptions",
    "MUL": "MulOptions",
    "MEAN": "ReducerOptions",
    "L2_NORMALIZATION": "L2NormOptions",
}
# op -> (min, max) inputs as stored in the file (a bias may be omitted as -1)
_ARITY = {"CONV_2D": (2, 3), "FULLY_CONNECTED": (2, 3), "ADD": (2, 2), "RESHAPE": (1, 2),
          "MUL": (2, 2), "MEAN": (2, 2)}


# --------------------------------------------------------------------------- bounds walk


class _Table:
    """A verified table: its position, vtable and size."""

    def __init__(self, w: _Walker, pos: int, what: str) -> None:
        self.w, self.pos, self.what = w, pos, what
        w.count_table(what)
        w.need(pos, 4, what, align=4)
        vt = pos - struct.unpack_from("<i", w.buf, pos)[0]
        w.need(vt, 4, f"{what} vtable", align=2)
        self.vt = vt
        self.vsize, self.tsize = struct.unpack_from("<HH", w.buf, vt)
        if self.vsize < 4 or self.vsize % 2 or self.tsize < 4:
            raise ModelFileError(f"{what}: corrupt vtable at offset {vt}")
        w.need(vt, self.vsize, f"{what} vtable")
        w.need(pos, self.tsize, what)

    def field(self, voff: int, size: int) -> int | None:
        """Absolute position of the field at vtable offset ``voff``, None if absent."""
        if voff + 2 > self.vsize:
            return None
        off = struct.unpack_from("<H", self.w.buf, self.vt + voff)[0]
        if off == 0:
            return None
        if off + size > self.tsize or (self.pos + off) % min(size, 8):
            raise ModelFileError(f"{self.what}: field {voff} lies outside its table")
        return self.pos + off

    def present(self, voff: int) -> bool:
        if voff + 2 > self.vsize:
            return False
        return struct.unpack_from("<H", self.w.buf, self.vt + voff)[0] != 0

    def scalar(self, voff: int, fmt: str, default: int = 0) -> int:
        p = self.field(voff, struct.calcsize(fmt))
        return default if p is None else struct.unpack_from("<" + fmt, self.w.buf, p)[0]

    def _target(self, voff: int) -> int | None:
        p = self.field(voff, 4)
        if p is None:
            return None
        return p + struct.unpack_from("<I", self.w.buf, p)[0]

    def table(self, voff: int, what: str) -> _Table | None:
        t = self._target(voff)
        return None if t is None else _Table(self.w, t, what)

    def vector(self, voff: int, elem_size: int, what: str) -> tuple[int, int] | None:
        """(position of the first element, length) of a scalar vector, None if absent."""
        v = self._target(voff)
        return None if v is None else self.w.vector_at(v, elem_size, what)

    def string(self, voff: int, what: str) -> None:
        v = self._target(voff)
        if v is None:
            return
        start, n = self.w.vector_at(v, 1, what)
        self.w.need(start + n, 1, f"{what} terminator")
        if self.w.buf[start + n] != 0:
            raise ModelFileError(f"{what}: string is not NUL-terminated")

    def tables(self, voff: int, what: str) -> list[_Table]:
        vec = self.vector(voff, 4, what)
        if vec is None:
            return []
        start, n = vec
        out = []
        for i in range(n):
            e = start + 4 * i
            target = e + struct.unpack_from("<I", self.w.buf, e)[0]
            out.append(_Table(self.w, target, f"{what}[{i}]"))
        return out


class _Walker:
    def __init__(self, buf: bytes) -> None:
        self.buf, self.n = buf, len(buf)
        self.tables = 0
        self.max_tables = self.n // 4 + 16

    def need(self, pos: int, size: int, what: str, align: int = 1) -> None:
        if pos < 0 or size < 0 or pos + size > self.n:
            raise ModelFileError(f"{what} at offset {pos} lies outside the {self.n}-byte file")
        if pos % align:
            raise ModelFileError(f"{what} at offset {pos} is misaligned")

    def count_table(self, what: str) -> None:
        self.tables += 1
        if self.tables > self.max_tables:
            raise ModelFileError(f"{what}: more tables than the file can hold (cyclic offsets?)")

    def vector_at(self, v: int, elem_size: int, what: str) -> tuple[int, int]:
        self.need(v, 4, f"{what} length", align=4)
        n = struct.unpack_from("<I", self.buf, v)[0]
        self.need(v + 4, n * elem_size, what, align=min(max(elem_size, 1), 8))
        return v + 4, n


def _walk_quant(q: _Table) -> None:
    for voff, name in ((4, "min"), (6, "max"), (8, "scale")):
        q.vector(voff, 4, f"{q.what}.{name}")
    q.vector(10, 8, f"{q.what}.zero_point")
    if q.present(14) or q.scalar(12, "B"):
        raise ModelFileError(f"{q.what}: custom quantization details are not supported")
    q.scalar(16, "i")


def _walk_tensor(t: _Table) -> None:
    t.vector(4, 4, f"{t.what}.shape")
    t.scalar(6, "b")
    t.scalar(8, "I")
    t.string(10, f"{t.what}.name")
    q = t.table(12, f"{t.what}.quantization")
    if q is not None:
        _walk_quant(q)
    if t.present(16):
        raise ModelFileError(f"{t.what}: sparse tensors are not supported")
    t.vector(18, 4, f"{t.what}.shape_signature")
    if t.present(22) or t.scalar(24, "I"):
        raise ModelFileError(f"{t.what}: variant tensors / external buffers are not supported")


def _walk_operator(op: _Table, options_ok: Any) -> None:
    op.scalar(4, "I")
    op.vector(6, 4, f"{op.what}.inputs")
    op.vector(8, 4, f"{op.what}.outputs")
    opt_type = op.scalar(10, "B")
    options = op.table(12, f"{op.what}.builtin_options")
    if options is not None:
        options_ok(opt_type, options)
    op.vector(14, 1, f"{op.what}.custom_options")
    op.vector(18, 1, f"{op.what}.mutating_variable_inputs")
    op.vector(20, 4, f"{op.what}.intermediates")
    if op.scalar(22, "Q") or op.scalar(24, "Q"):
        raise ModelFileError(f"{op.what}: large custom options are not supported")
    if op.scalar(26, "B") or op.present(28):
        raise ModelFileError(f"{op.what}: builtin_options_2 is not supported")


def _walk(buf: bytes, fb: Any) -> None:
    """Bounds-check every table, vector and string the runtimes read."""
    w = _Walker(buf)
    w.need(0, 8, "root offset")
    model = _Table(w, struct.unpack_from("<I", buf, 0)[0], "model")
    model.scalar(4, "I")
    for oc in model.tables(6, "operator_codes"):
        oc.scalar(4, "b")
        oc.string(6, f"{oc.what}.custom_code")
        oc.scalar(8, "i")
        oc.scalar(10, "i")
    model.string(10, "description")
    for b in model.tables(12, "buffers"):
        b.vector(4, 1, f"{b.what}.data")
        b.scalar(6, "Q")
        b.scalar(8, "Q")
    model.vector(14, 4, "metadata_buffer")
    for m in model.tables(16, "metadata"):
        m.string(4, f"{m.what}.name")
        m.scalar(6, "I")
    for sd in model.tables(18, "signature_defs"):
        for voff in (4, 6):
            for tm in sd.tables(voff, f"{sd.what}.tensors"):
                tm.string(4, f"{tm.what}.name")
                tm.scalar(6, "I")
        sd.string(8, f"{sd.what}.signature_key")
        sd.scalar(12, "I")
    if model.present(20) or model.present(22):
        raise ModelFileError("model: external buffers are not supported")

    reshape_type = fb.BuiltinOptions.ReshapeOptions

    def options_ok(opt_type: int, options: _Table) -> None:
        if opt_type == reshape_type:
            options.vector(4, 4, f"{options.what}.new_shape")

    for sg in model.tables(8, "subgraphs"):
        for t in sg.tables(4, f"{sg.what}.tensors"):
            _walk_tensor(t)
        sg.vector(6, 4, f"{sg.what}.inputs")
        sg.vector(8, 4, f"{sg.what}.outputs")
        for op in sg.tables(10, f"{sg.what}.operators"):
            _walk_operator(op, options_ok)
        sg.string(12, f"{sg.what}.name")


# --------------------------------------------------------------------------- semantics


def _ints(v: Any) -> list[int]:
    return [] if v is None else [int(x) for x in v]


def _name(t: Any) -> str:
    n = t.name
    return n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n or "")


def _has_data(buffer: Any) -> bool:
    return buffer.data is not None and len(buffer.data) > 0


def _check_tensor(t: Any, buffers: list[Any], what: str) -> None:
    """Type, shape, constant size and quantization of one tensor."""
    if t.type not in _DTYPES:
        raise ModelFileError(
            f"{what}: tensor type {t.type} is not supported (float32, int32, int8)"
        )
    dtype = _DTYPES[t.type]
    shape = _ints(t.shape)
    if len(shape) > MAX_RANK or any(d < 1 for d in shape):
        raise ModelFileError(f"{what}: invalid shape {shape}")
    if math.prod(shape) > MAX_ELEMENTS:
        raise ModelFileError(f"{what}: shape {shape} is implausibly large")
    nbytes = math.prod(shape) * np.dtype(dtype).itemsize
    if not 0 <= t.buffer < len(buffers):
        raise ModelFileError(f"{what}: buffer index {t.buffer} out of range ({len(buffers)})")
    data = buffers[t.buffer].data
    if data is not None and len(data) and len(data) != nbytes:
        raise ModelFileError(
            f"{what}: buffer {t.buffer} holds {len(data)} bytes, {dtype}{shape} needs {nbytes}"
        )
    q = t.quantization
    if q is None or q.scale is None or not len(q.scale):
        return
    scale, zps = [float(s) for s in q.scale], _ints(q.zeroPoint)
    if len(zps) != len(scale):
        raise ModelFileError(f"{what}: {len(scale)} scales but {len(zps)} zero points")
    if not all(math.isfinite(s) and s > 0 for s in scale):
        raise ModelFileError(f"{what}: quantization scales must be finite and > 0")
    axis = q.quantizedDimension
    if len(scale) > 1 and not (0 <= axis < len(shape) and shape[axis] == len(scale)):
        raise ModelFileError(f"{what}: {len(scale)} scales do not match dim {axis} of {shape}")
    lo, hi = _ZERO_POINTS[dtype]
    if any(not lo <= z <= hi for z in zps):
        raise ModelFileError(f"{what}: zero point outside [{lo}, {hi}] for {dtype}")


def _reshape_target(options: Any, shape_input: list[int] | None) -> list[int] | None:
    """A RESHAPE's target: ``new_shape`` from its options, else its shape input."""
    if options is not None and options.newShape is not None and len(options.newShape):
        return _ints(options.newShape)
    return shape_input


class _OpChecker:
    """Arity, dtypes, options and shapes of the block ops, as the TFLM kernels assume them."""

    def __init__(self, fb: Any, tensors: list[Any], buffers: list[Any]) -> None:
        self.fb, self.tensors, self.buffers = fb, tensors, buffers

    def shape(self, i: int) -> list[int]:
        return _ints(self.tensors[i].shape)

    def const(self, i: int) -> bool:
        return _has_data(self.buffers[self.tensors[i].buffer])

    def check(self, kind: str, op: Any, what: str) -> list[int]:
        """Check one op; return its input indices (an omitted bias left out)."""
        fb = self.fb
        expected = _OPTIONS[kind]
        if op.builtinOptionsType != getattr(fb.BuiltinOptions, expected):
            raise ModelFileError(f"{what} ({kind}): options are not {expected}")
        if op.builtinOptions is None and kind not in ("RESHAPE", "L2_NORMALIZATION"):
            raise ModelFileError(f"{what} ({kind}): missing {expected}")
        ins, outs = _ints(op.inputs), _ints(op.outputs)
        if kind in ("CONV_2D", "FULLY_CONNECTED") and len(ins) == 3 and ins[2] == -1:
            ins = ins[:2]  # optional bias left out
        lo, hi = _ARITY.get(kind, (1, 1))
        if not lo <= len(ins) <= hi or len(outs) != 1 or any(i < 0 for i in ins):
            raise ModelFileError(
                f"{what} ({kind}): wrong number of inputs/outputs (inputs {ins}, outputs {outs})"
            )
        self._types(kind, ins, outs[0], what)
        getattr(self, "_" + kind.lower())(op, ins, outs[0], what)
        return ins

    def _quant_len(self, i: int) -> int:
        q = self.tensors[i].quantization
        return 0 if q is None or q.scale is None else len(q.scale)

    def _types(self, kind: str, ins: list[int], out: int, what: str) -> None:
        """Block ops are all-float32 or int8 with int32 biases, quantized as TFLM needs."""
        float32, int8, int32 = 0, 9, 2
        ty = self.tensors[ins[0]].type
        acts = [ins[0], out] + ([ins[1]] if kind in ("ADD", "MUL") else [])
        if ty not in (float32, int8) or any(self.tensors[i].type != ty for i in acts):
            raise ModelFileError(f"{what} ({kind}): activations must all be float32 or int8")
        params = ins[1:3] if kind in ("CONV_2D", "FULLY_CONNECTED") else []
        if ty == float32:
            if any(self.tensors[i].type != float32 for i in params):
                raise ModelFileError(f"{what} ({kind}): float op needs float32 weights and bias")
            return
        if any(self._quant_len(i) != 1 for i in acts):
            raise ModelFileError(f"{what} ({kind}): int8 activations need per-tensor quantization")
        if params:
            w = self.tensors[params[0]]
            if w.type != int8 or self._quant_len(params[0]) == 0:
                raise ModelFileError(f"{what} ({kind}): weights must be quantized int8")
            if any(_ints(w.quantization.zeroPoint)):
                raise ModelFileError(f"{what} ({kind}): weights must be symmetric (zero point 0)")
            if self._quant_len(params[0]) > 1 and w.quantization.quantizedDimension != 0:
                raise ModelFileError(f"{what} ({kind}): per-channel weights need axis 0")
            if len(params) == 2 and self.tensors[params[1]].type != int32:
                raise ModelFileError(f"{what} ({kind}): int8 op needs an int32 bias")

    def _activation(self, act: int, what: str, kind: str, relu: bool = True) -> None:
        t = self.fb.ActivationFunctionType
        if act not in ((t.NONE, t.RELU) if relu else (t.NONE,)):
            allowed = "NONE, RELU" if relu else "NONE"
            raise ModelFileError(f"{what} ({kind}): fused activation {act} is not supported "
                                 f"({allowed})")

    def _window(self, o: Any, what: str, kind: str, filt: tuple[int, int] | None) -> None:
        if o.padding not in (self.fb.Padding.SAME, self.fb.Padding.VALID):
            raise ModelFileError(f"{what} ({kind}): padding {o.padding} is not SAME or VALID")
        self._activation(o.fusedActivationFunction, what, kind, relu=kind == "CONV_2D")
        if o.strideH < 1 or o.strideW < 1 or (filt is not None and min(filt) < 1):
            raise ModelFileError(f"{what} ({kind}): strides and filter sizes must be >= 1")

    def _nhwc(self, i: int, what: str, kind: str) -> list[int]:
        x = self.shape(i)
        if len(x) != 4 or x[0] != 1:
            raise ModelFileError(f"{what} ({kind}): input must be 4-D NHWC, batch 1, got {x}")
        return x

    def _pool(self, op: Any, ins: list[int], out: int, what: str, kind: str) -> None:
        o = op.builtinOptions
        self._window(o, what, kind, (o.filterHeight, o.filterWidth))
        self._nhwc(ins[0], what, kind)

    def _max_pool_2d(self, op: Any, ins: list[int], out: int, what: str) -> None:
        self._pool(op, ins, out, what, "MAX_POOL_2D")

    def _average_pool_2d(self, op: Any, ins: list[int], out: int, what: str) -> None:
        self._pool(op, ins, out, what, "AVERAGE_POOL_2D")

    def _conv_2d(self, op: Any, ins: list[int], out: int, what: str) -> None:
        o = op.builtinOptions
        self._window(o, what, "CONV_2D", None)
        if (o.dilationHFactor, o.dilationWFactor) != (1, 1):
            raise ModelFileError(
                f"{what} (CONV_2D): dilation {(o.dilationHFactor, o.dilationWFactor)} is not "
                "supported (only 1)"
            )
        self._nhwc(ins[0], what, "CONV_2D")

    def _fully_connected(self, op: Any, ins: list[int], out: int, what: str) -> None:
        o = op.builtinOptions
        self._activation(o.fusedActivationFunction, what, "FULLY_CONNECTED")
        if o.weightsFormat != 0 or o.keepNumDims:
            raise ModelFileError(f"{what} (FULLY_CONNECTED): only the default weights format "
                                 "without keep_num_dims is supported")

    def _add(self, op: Any, ins: list[int], out: int, what: str) -> None:
        self._activation(op.builtinOptions.fusedActivationFunction, what, "ADD")

    def _mul(self, op: Any, ins: list[int], out: int, what: str) -> None:
        self._activation(op.builtinOptions.fusedActivationFunction, what, "MUL")

    def mean_axes(self, i: int, what: str) -> list[int]:
        """The constant int32 axes input of a MEAN."""
        s = self.tensors[i]
        if s.type != 2 or len(_ints(s.shape)) != 1 or not self.const(i):
            raise ModelFileError(f"{what} (MEAN): axes must be a 1-D int32 constant")
        raw = bytes(np.asarray(self.buffers[s.buffer].data, np.uint8))
        return list(struct.unpack(f"<{len(raw) // 4}i", raw))

    def _mean(self, op: Any, ins: list[int], out: int, what: str) -> None:
        self.mean_axes(ins[1], what)

    def _l2_normalization(self, op: Any, ins: list[int], out: int, what: str) -> None:
        o = op.builtinOptions
        if o is not None:
            self._activation(o.fusedActivationFunction, what, "L2_NORMALIZATION", relu=False)

    def _reshape(self, op: Any, ins: list[int], out: int, what: str) -> None:
        out_shape = self.shape(out)

        def matches(target: list[int]) -> bool:
            return len(target) == len(out_shape) and all(
                t in (o, -1) for t, o in zip(target, out_shape, strict=True)
            )

        shape_input = None
        if len(ins) == 2:
            s = self.tensors[ins[1]]
            if s.type != 2 or len(_ints(s.shape)) != 1 or not self.const(ins[1]):
                raise ModelFileError(f"{what} (RESHAPE): shape input must be a 1-D int32 constant")
            raw = bytes(np.asarray(self.buffers[s.buffer].data, np.uint8))
            shape_input = list(struct.unpack(f"<{len(raw) // 4}i", raw))
            if not matches(shape_input):
                raise ModelFileError(
                    f"{what} (RESHAPE): shape input {shape_input} does not match output {out_shape}"
                )
        target = _reshape_target(op.builtinOptions, shape_input)
        if target is None:
            raise ModelFileError(f"{what} (RESHAPE): no target shape (new_shape or shape input)")
        if not matches(target):
            raise ModelFileError(
                f"{what} (RESHAPE): new_shape {target} does not match output {out_shape}"
            )


def _op_kinds(fb: Any, codes: list[Any]) -> list[str]:
    """The op kind of every operator code; only block ops are allowed."""
    names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
    kinds = []
    for i, oc in enumerate(codes):
        code = max(int(oc.builtinCode), int(oc.deprecatedBuiltinCode))
        kind = names.get(code)
        if kind is None or kind == "CUSTOM" or oc.deprecatedBuiltinCode < 0:
            raise ModelFileError(f"operator code {i}: unknown builtin code {code}")
        if kind not in SUPPORTED:
            raise ModelFileError(f"operator code {i}: op {kind} is not allowed here; "
                                 f"supported: {list(SUPPORTED)}")
        kinds.append(kind)
    return kinds


def _check_subgraph(fb: Any, sg: Any, buffers: list[Any], kinds: list[str]) -> list[list[int]]:
    """Check tensors, endpoints, dataflow and every op; return each op's input indices."""
    tensors = sg.tensors or []
    nt = len(tensors)
    for i, t in enumerate(tensors):
        _check_tensor(t, buffers, f"tensor {i} ({_name(t)!r})")
    checker = _OpChecker(fb, tensors, buffers)
    ins, outs = _ints(sg.inputs), _ints(sg.outputs)
    if not ins or not outs:
        raise ModelFileError("subgraph: no inputs or no outputs")
    for i in ins + outs:
        if not 0 <= i < nt:
            raise ModelFileError(f"subgraph: endpoint tensor {i} out of range ({nt})")
    if len(set(ins)) != len(ins) or len(set(outs)) != len(outs):
        raise ModelFileError("subgraph: repeated input or output tensor")
    if any(checker.const(i) for i in ins):
        raise ModelFileError("subgraph: an input tensor is a constant")
    written = set(ins)
    op_inputs = []
    for k, op in enumerate(sg.operators or []):
        what = f"operator {k}"
        if not 0 <= op.opcodeIndex < len(kinds):
            raise ModelFileError(f"{what}: opcode index {op.opcodeIndex} out of range "
                                 f"({len(kinds)} codes)")
        op_ins, op_outs = _ints(op.inputs), _ints(op.outputs)
        if any(not -1 <= i < nt for i in op_ins) or any(not 0 <= i < nt for i in op_outs):
            raise ModelFileError(f"{what}: tensor index out of range ({nt} tensors)")
        for i in op_ins:
            if i >= 0 and not checker.const(i) and i not in written:
                raise ModelFileError(f"{what}: tensor {i} is read before it is written")
        for i in op_outs:
            if checker.const(i) or i in written:
                raise ModelFileError(f"{what}: output tensor {i} is a constant or written twice")
            written.add(i)
        op_inputs.append(checker.check(kinds[op.opcodeIndex], op, what))
    for i in outs:
        if i not in written:
            raise ModelFileError(f"subgraph: output tensor {i} is never written")
    return op_inputs


# --------------------------------------------------------------------------- BlockGraph


def _tensor(ft: Any, name: str, buffer: Any) -> Tensor:
    dtype = _DTYPES[ft.type]
    shape = tuple(_ints(ft.shape))
    data = None
    if _has_data(buffer):
        raw = np.asarray(buffer.data, np.uint8).tobytes()
        le = np.dtype(dtype).newbyteorder("<")
        data = np.frombuffer(raw, le).astype(dtype).reshape(shape)
    quant = None
    q = ft.quantization
    if q is not None and q.scale is not None and len(q.scale):
        scale = np.asarray(q.scale, np.float32).reshape(-1)
        axis = int(q.quantizedDimension) if scale.size > 1 else None
        quant = Quant(scale, np.asarray(q.zeroPoint, np.int64).reshape(-1), axis)
    return Tensor(name, shape, dtype, quant, data)


def _options(fb: Any, kind: str, o: Any, shape_input: Tensor | None) -> dict[str, Any]:
    """The IR options of a checked op."""
    if kind == "RESHAPE":
        values = None if shape_input is None else [int(v) for v in shape_input.data]
        return {"shape": tuple(_reshape_target(o, values) or ())}
    if kind == "MEAN":
        assert shape_input is not None  # the checked axes constant
        return {"axes": tuple(int(v) for v in shape_input.data), "keep_dims": bool(o.keepDims)}
    if kind == "L2_NORMALIZATION":
        return {}
    relu = o.fusedActivationFunction == fb.ActivationFunctionType.RELU
    if kind in ("FULLY_CONNECTED", "ADD", "MUL"):
        return {"relu": relu}
    out: dict[str, Any] = {
        "stride": (int(o.strideH), int(o.strideW)),
        "padding": "SAME" if o.padding == fb.Padding.SAME else "VALID",
    }
    if kind == "CONV_2D":
        out["relu"] = relu
    else:
        out["filter"] = (int(o.filterHeight), int(o.filterWidth))
    return out


def _build(
    fb: Any, sg: Any, buffers: list[Any], kinds: list[str], op_inputs: list[list[int]], name: str
) -> BlockGraph:
    tensors: list[Tensor] = []
    taken: set[str] = set()
    for i, ft in enumerate(sg.tensors or []):
        tname = _name(ft) or f"tensor{i}"
        if tname in taken:  # names key the IR; keep every tensor reachable
            tname = f"{tname}#{i}"
        taken.add(tname)
        tensors.append(_tensor(ft, tname, buffers[ft.buffer]))
    ops: list[Op] = []
    shape_inputs: set[str] = set()
    for op, ins in zip(sg.operators or [], op_inputs, strict=True):
        kind = kinds[op.opcodeIndex]
        shape_input = (tensors[ins[1]] if kind in ("RESHAPE", "MEAN") and len(ins) == 2
                       else None)
        if shape_input is not None:  # the IR keeps the target (axes) in the op's options
            shape_inputs.add(shape_input.name)
            ins = ins[:1]
        options = _options(fb, kind, op.builtinOptions, shape_input)
        ops.append(Op(kind, [tensors[i].name for i in ins], [tensors[op.outputs[0]].name], options))
    inputs = [tensors[i].name for i in _ints(sg.inputs)]
    outputs = [tensors[i].name for i in _ints(sg.outputs)]
    used = {n for op in ops for n in op.inputs + op.outputs} | set(inputs) | set(outputs)
    keep = {t.name: t for t in tensors if t.name in used or t.name not in shape_inputs}
    graph = BlockGraph(_name(sg) or name, keep, ops, inputs, outputs)
    try:
        validate_graph(graph)  # the IR's structure, then each op's own checks
    except ValueError as exc:
        raise ModelFileError(str(exc)) from None
    return graph


def _read(data: bytes, name: str) -> BlockGraph:
    n = len(data)
    if not MIN_MODEL_BYTES <= n <= MAX_MODEL_BYTES:
        too = "short" if n < MIN_MODEL_BYTES else "large"
        raise ModelFileError(f"file is {n} bytes, too {too} for a TFLite model")
    if data[4:8] != IDENTIFIER:
        raise ModelFileError(
            f"file identifier is {data[4:8]!r}, expected {IDENTIFIER!r} (not a .tflite file)"
        )
    fb = schema()
    _walk(data, fb)
    model = fb.ModelT.InitFromObj(fb.Model.GetRootAs(data, 0))
    if model.version != 3:
        raise ModelFileError(f"schema version {model.version}, expected 3")
    subgraphs, buffers = model.subgraphs or [], model.buffers or []
    if len(subgraphs) != 1:
        raise ModelFileError(f"expected exactly one subgraph, found {len(subgraphs)}")
    if not buffers:
        raise ModelFileError("no buffers")
    if _has_data(buffers[0]):
        raise ModelFileError("buffer 0 must be empty")
    if any(b.offset > 1 or b.size for b in buffers):
        raise ModelFileError("buffers stored outside the flatbuffer are not supported")
    kinds = _op_kinds(fb, model.operatorCodes or [])
    op_inputs = _check_subgraph(fb, subgraphs[0], buffers, kinds)
    return _build(fb, subgraphs[0], buffers, kinds, op_inputs, name)


def read_tflite(data: bytes, name: str = "block") -> BlockGraph:
    """Parse and validate .tflite bytes into a ``BlockGraph``.

    Any damage raises ``ModelFileError`` as ``model 'NAME': problem``; nothing else
    escapes, and a malformed file never reaches a runtime. The graph takes the
    subgraph name stored in the file; ``name`` is used when the file has none.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ModelFileError(f"model {name!r}: expected bytes, got {type(data).__name__}")
    try:
        return _read(bytes(data), name)
    except ModelFileError as exc:
        raise ModelFileError(f"model {name!r}: {exc}") from None
    except Exception as exc:  # any other failure of the flatbuffer accessors: a bad file
        raise ModelFileError(
            f"model {name!r}: malformed or truncated flatbuffer ({type(exc).__name__}: {exc})"
        ) from None
