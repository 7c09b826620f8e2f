"""Validate TFLite bytes before a runtime sees them.

TFLM does not verify flatbuffers: an out-of-range offset, index or shape in a model
can make it read outside the model or the arena and crash the process. So
``load_tflite_checked`` first walks every table, vector and string the runtimes
read with explicit bounds checks (what the C++ flatbuffers Verifier does), then
parses the model with the flatc-generated schema, then checks what the kernels
assume: indices in range, constant sizes, quantization, op options and shapes,
and that activations are written before they are read.

Imports only the standard library and the schema module (plus numpy via it).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from ctxconv.export.ir import SUPPORTED_OPS, ModelFileError

#: Smallest and largest model the checker accepts (bytes).
MIN_MODEL_BYTES = 32
MAX_MODEL_BYTES = 1 << 30
MAX_RANK = 6
MAX_TENSOR_BYTES = 1 << 30

# TensorType -> (numpy dtype name, item size)
_TENSOR_TYPES: dict[int, tuple[str, int]] = {
    0: ("float32", 4), 1: ("float16", 2), 2: ("int32", 4), 3: ("uint8", 1),
    4: ("int64", 8), 6: ("bool", 1), 7: ("int16", 2), 9: ("int8", 1),
    10: ("float64", 8), 15: ("uint32", 4), 16: ("uint16", 2),
}  # fmt: skip

# op -> name of its BuiltinOptions table (None: takes no options)
_OPTIONS: dict[str, str | None] = {
    "CONV_2D": "Conv2DOptions",
    "MAX_POOL_2D": "Pool2DOptions",
    "AVERAGE_POOL_2D": "Pool2DOptions",
    "FULLY_CONNECTED": "FullyConnectedOptions",
    "ADD": "AddOptions",
    "RESHAPE": "ReshapeOptions",
}


def _schema() -> Any:
    from ctxconv.export.tflite_writer import schema

    return schema()


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


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output: name, shape (batch 1), numpy dtype, quantization."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    scale: tuple[float, ...] = ()
    zero_point: tuple[int, ...] = ()


def _ints(v: Any) -> list[int]:
    return [] if v is None else [int(x) for x in v]


def _name(t: Any) -> str:
    n = t.name
    return n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n or "")


def _check_tensor(i: int, t: Any, buffers: list[Any], what: str) -> int:
    """Check one tensor; return its size in bytes."""
    if t.type not in _TENSOR_TYPES:
        raise ModelFileError(f"{what}: tensor type {t.type} is not supported")
    shape = _ints(t.shape)
    if len(shape) > MAX_RANK or any(d < 1 for d in shape):
        raise ModelFileError(f"{what}: invalid shape {shape}")
    nbytes = math.prod(shape) * _TENSOR_TYPES[t.type][1]
    if nbytes > MAX_TENSOR_BYTES:
        raise ModelFileError(f"{what}: {nbytes} bytes is too large")
    if not 0 <= t.buffer < len(buffers):
        raise ModelFileError(f"{what}: buffer index {t.buffer} out of range ({len(buffers)})")
    data = buffers[t.buffer].data
    if data is not None and len(data) and len(data) != nbytes:
        raise ModelFileError(
            f"{what}: buffer {t.buffer} holds {len(data)} bytes, shape {shape} needs {nbytes}"
        )
    q = t.quantization
    if q is not None and q.scale is not None and len(q.scale):
        scale = [float(s) for s in q.scale]
        zps = _ints(q.zeroPoint)
        if len(zps) != len(scale):
            raise ModelFileError(f"{what}: {len(scale)} scales but {len(zps)} zero points")
        if not all(math.isfinite(s) and s > 0 for s in scale):
            raise ModelFileError(f"{what}: quantization scales must be finite and > 0")
        if len(scale) > 1 and not (
            0 <= q.quantizedDimension < len(shape) and shape[q.quantizedDimension] == len(scale)
        ):
            raise ModelFileError(
                f"{what}: {len(scale)} scales do not match dim {q.quantizedDimension} of {shape}"
            )
        dtype = _TENSOR_TYPES[t.type][0]
        lo, hi = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767)}.get(
            dtype, (-(2**31), 2**31 - 1)
        )
        if any(not lo <= z <= hi for z in zps):
            raise ModelFileError(f"{what}: zero point out of range for {dtype}")
    return nbytes


def _out_size(size: int, k: int, s: int, padding: int, same: int) -> int:
    return math.ceil(size / s) if padding == same else max(0, math.ceil((size - k + 1) / s))


class _OpChecker:
    """Options and shape rules of the block ops, as the TFLM kernels assume them."""

    def __init__(self, fb: Any, tensors: list[Any], buffers: list[Any]) -> None:
        self.fb, self.tensors, self.buffers = fb, tensors, buffers
        self.acts = set(range(6))  # ActivationFunctionType NONE..SIGN_BIT

    def shape(self, i: int) -> list[int]:
        return _ints(self.tensors[i].shape)

    def const(self, i: int) -> bool:
        data = self.buffers[self.tensors[i].buffer].data
        return data is not None and len(data) > 0

    def check(self, kind: str, op: Any, what: str) -> None:
        fb = self.fb
        expected = _OPTIONS.get(kind)
        if expected is not None:
            if op.builtinOptionsType != getattr(fb.BuiltinOptions, expected):
                raise ModelFileError(f"{what} ({kind}): options are not {expected}")
            if op.builtinOptions is None and kind != "RESHAPE":
                raise ModelFileError(f"{what} ({kind}): missing {expected}")
        ins, outs = _ints(op.inputs), _ints(op.outputs)
        arity = {"CONV_2D": (2, 3), "FULLY_CONNECTED": (2, 3), "ADD": (2, 2), "RESHAPE": (1, 2)}
        lo, hi = arity.get(kind, (1, 1))
        if not lo <= len(ins) <= hi or len(outs) != 1 or any(i < 0 for i in ins):
            raise ModelFileError(f"{what} ({kind}): wrong number of inputs/outputs")
        self._types(kind, ins, outs[0], what)
        getattr(self, "_" + kind.lower())(op, ins, outs[0], what)

    def _quant_len(self, i: int) -> int:
        q = self.tensors[i].quantization
        return 0 if q is None or q.scale is None else len(q.scale)

    def _types(self, kind: str, ins: list[int], out: int, what: str) -> None:
        """Block ops are all-float32 or int8 with int32 biases, quantized as TFLM needs."""
        float32, int8, int32 = 0, 9, 2
        ty = self.tensors[ins[0]].type
        acts = [ins[0], out] + ([ins[1]] if kind == "ADD" else [])
        if ty not in (float32, int8) or any(self.tensors[i].type != ty for i in acts):
            raise ModelFileError(f"{what} ({kind}): activations must all be float32 or int8")
        params = [i for i in ins[1:3] if i >= 0] if kind in ("CONV_2D", "FULLY_CONNECTED") else []
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
            if self._quant_len(params[0]) > 1 and w.quantization.quantizedDimension != 0:
                raise ModelFileError(f"{what} ({kind}): per-channel weights need axis 0")
            if len(params) == 2 and self.tensors[params[1]].type != int32:
                raise ModelFileError(f"{what} ({kind}): int8 op needs an int32 bias")

    def _window(self, o: Any, what: str, kind: str, filt: tuple[int, int] | None) -> None:
        same, valid = self.fb.Padding.SAME, self.fb.Padding.VALID
        if o.padding not in (same, valid) or o.fusedActivationFunction not in self.acts:
            raise ModelFileError(f"{what} ({kind}): invalid padding or activation")
        if o.strideH < 1 or o.strideW < 1 or (filt is not None and min(filt) < 1):
            raise ModelFileError(f"{what} ({kind}): strides and filter sizes must be >= 1")

    def _expect(self, out: int, shape: list[int], what: str, kind: str) -> None:
        if self.shape(out) != shape:
            raise ModelFileError(
                f"{what} ({kind}): output shape {self.shape(out)}, expected {shape}"
            )

    def _pool(self, op: Any, ins: list[int], out: int, what: str, kind: str) -> None:
        o = op.builtinOptions
        self._window(o, what, kind, (o.filterHeight, o.filterWidth))
        x = self.shape(ins[0])
        if len(x) != 4:
            raise ModelFileError(f"{what} ({kind}): input must be 4-D, got {x}")
        same = self.fb.Padding.SAME
        oh = _out_size(x[1], o.filterHeight, o.strideH, o.padding, same)
        ow = _out_size(x[2], o.filterWidth, o.strideW, o.padding, same)
        self._expect(out, [x[0], oh, ow, x[3]], what, kind)

    def _max_pool_2d(self, op: Any, ins: list[int], out: int, what: str) -> None:
        self._pool(op, ins, out, what, "MAX_POOL_2D")

    def _average_pool_2d(self, op: Any, ins: list[int], out: int, what: str) -> None:
        self._pool(op, ins, out, what, "AVERAGE_POOL_2D")

    def _bias(self, ins: list[int], channels: int, what: str, kind: str) -> None:
        if len(ins) == 3 and ins[2] >= 0 and self.shape(ins[2]) != [channels]:
            raise ModelFileError(f"{what} ({kind}): bias shape must be [{channels}]")

    def _conv_2d(self, op: Any, ins: list[int], out: int, what: str) -> None:
        o = op.builtinOptions
        self._window(o, what, "CONV_2D", None)
        if o.dilationHFactor < 1 or o.dilationWFactor < 1:
            raise ModelFileError(f"{what} (CONV_2D): dilation must be >= 1")
        x, w = self.shape(ins[0]), self.shape(ins[1])
        if len(x) != 4 or len(w) != 4 or x[3] != w[3]:  # grouped convs are not block ops
            raise ModelFileError(f"{what} (CONV_2D): input {x} and filter {w} do not match")
        if not self.const(ins[1]):
            raise ModelFileError(f"{what} (CONV_2D): filter must be a constant")
        self._bias(ins, w[0], what, "CONV_2D")
        same = self.fb.Padding.SAME
        kh = (w[1] - 1) * o.dilationHFactor + 1
        kw = (w[2] - 1) * o.dilationWFactor + 1
        oh = _out_size(x[1], kh, o.strideH, o.padding, same)
        ow = _out_size(x[2], kw, o.strideW, o.padding, same)
        self._expect(out, [x[0], oh, ow, w[0]], what, "CONV_2D")

    def _fully_connected(self, op: Any, ins: list[int], out: int, what: str) -> None:
        o = op.builtinOptions
        if o.fusedActivationFunction not in self.acts or o.weightsFormat != 0:
            raise ModelFileError(f"{what} (FULLY_CONNECTED): invalid activation/weights format")
        x, w = self.shape(ins[0]), self.shape(ins[1])
        if len(w) != 2 or not x or math.prod(x) % w[1]:
            raise ModelFileError(f"{what} (FULLY_CONNECTED): input {x} and weights {w} mismatch")
        self._bias(ins, w[0], what, "FULLY_CONNECTED")
        batch = math.prod(x) // w[1]
        expect = [*x[:-1], w[0]] if o.keepNumDims else [batch, w[0]]
        self._expect(out, expect, what, "FULLY_CONNECTED")

    def _add(self, op: Any, ins: list[int], out: int, what: str) -> None:
        if op.builtinOptions.fusedActivationFunction not in self.acts:
            raise ModelFileError(f"{what} (ADD): invalid activation")
        a, b = self.shape(ins[0]), self.shape(ins[1])
        if max(len(a), len(b)) > 4:
            raise ModelFileError(f"{what} (ADD): inputs of rank > 4 are not supported")
        n = max(len(a), len(b))
        a, b = [1] * (n - len(a)) + a, [1] * (n - len(b)) + b
        if any(x != y and 1 not in (x, y) for x, y in zip(a, b, strict=True)):
            raise ModelFileError(f"{what} (ADD): shapes {a} and {b} do not broadcast")
        self._expect(out, [max(x, y) for x, y in zip(a, b, strict=True)], what, "ADD")

    def _reshape(self, op: Any, ins: list[int], out: int, what: str) -> None:
        if math.prod(self.shape(ins[0])) != math.prod(self.shape(out)):
            raise ModelFileError(f"{what} (RESHAPE): element counts differ")
        if len(ins) == 2:
            s = self.tensors[ins[1]]
            if s.type != 2 or len(_ints(s.shape)) != 1 or not self.const(ins[1]):
                raise ModelFileError(f"{what} (RESHAPE): shape input must be a 1-D int32 constant")
            raw = bytes(self.buffers[s.buffer].data)
            target = list(struct.unpack(f"<{len(raw) // 4}i", raw))
            out_shape = self.shape(out)
            if len(target) != len(out_shape) or any(
                t != o and t != -1 for t, o in zip(target, out_shape, strict=True)
            ):
                raise ModelFileError(
                    f"{what} (RESHAPE): shape input {target} does not match output {out_shape}"
                )


def _parse(data: bytes, fb: Any) -> Any:
    try:
        return fb.ModelT.InitFromObj(fb.Model.GetRootAs(data, 0))
    except ModelFileError:
        raise
    except Exception as exc:  # any parse failure means a corrupt file
        raise ModelFileError(f"cannot parse the TFLite flatbuffer: {exc!r}") from exc


def check_tflite(
    data: bytes, allowed_ops: Collection[str] | None = None, name: str = "model"
) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Validate TFLite bytes; return the (inputs, outputs) of subgraph 0.

    ``allowed_ops`` defaults to the block ops (``ir.SUPPORTED_OPS``); the options and
    shapes of those ops are checked in depth. Raises ``ModelFileError`` naming
    ``name`` and the problem; never lets a malformed file reach a runtime.
    """
    try:
        return _check(data, allowed_ops, name)
    except ModelFileError as exc:
        raise ModelFileError(f"{name}: {exc}") from None
    except RecursionError as exc:  # pragma: no cover - defensive
        raise ModelFileError(f"{name}: malformed TFLite file ({exc})") from None


def _check(
    data: bytes, allowed_ops: Collection[str] | None, name: str
) -> tuple[list[TensorSpec], list[TensorSpec]]:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ModelFileError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if not MIN_MODEL_BYTES <= len(data) <= MAX_MODEL_BYTES:
        raise ModelFileError(f"size {len(data)} bytes is not a plausible TFLite model")
    if data[4:8] != b"TFL3":
        raise ModelFileError(f"not a TFLite file (identifier {data[4:8]!r}, expected b'TFL3')")
    fb = _schema()
    _walk(data, fb)
    model = _parse(data, fb)
    if model.version != 3:
        raise ModelFileError(f"schema version {model.version}, expected 3")
    if not model.subgraphs or not model.buffers:
        raise ModelFileError("no subgraphs or no buffers")
    buffers = model.buffers
    if buffers[0].data is not None and len(buffers[0].data):
        raise ModelFileError("buffer 0 must be empty")
    if any(b.offset > 1 or b.size for b in buffers):
        raise ModelFileError("buffers stored outside the flatbuffer are not supported")
    allowed = set(SUPPORTED_OPS if allowed_ops is None else allowed_ops)
    op_names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
    kinds = []
    for i, oc in enumerate(model.operatorCodes or []):
        code = max(int(oc.builtinCode), int(oc.deprecatedBuiltinCode))
        kind = op_names.get(code)
        if kind is None or kind == "CUSTOM" or oc.deprecatedBuiltinCode < 0:
            raise ModelFileError(f"operator code {i}: unknown builtin code {code}")
        if kind not in allowed:
            raise ModelFileError(f"operator code {i}: op {kind} is not allowed here")
        kinds.append(kind)
    for si, sg in enumerate(model.subgraphs):
        _check_subgraph(fb, sg, si, buffers, kinds)
    sg = model.subgraphs[0]
    return _specs(sg, sg.inputs), _specs(sg, sg.outputs)


def _check_subgraph(fb: Any, sg: Any, si: int, buffers: list[Any], kinds: list[str]) -> None:
    tensors = sg.tensors or []
    nt = len(tensors)
    for i, t in enumerate(tensors):
        _check_tensor(i, t, buffers, f"subgraph {si} tensor {i} ({_name(t)!r})")
    checker = _OpChecker(fb, tensors, buffers)
    ins, outs = _ints(sg.inputs), _ints(sg.outputs)
    if not ins or not outs:
        raise ModelFileError(f"subgraph {si}: no inputs or no outputs")
    for i in ins + outs:
        if not 0 <= i < nt:
            raise ModelFileError(f"subgraph {si}: endpoint tensor {i} out of range ({nt})")
    if len(set(ins)) != len(ins) or len(set(outs)) != len(outs):
        raise ModelFileError(f"subgraph {si}: repeated input or output tensor")
    if any(checker.const(i) for i in ins):
        raise ModelFileError(f"subgraph {si}: an input tensor is a constant")
    written = set(ins)
    for k, op in enumerate(sg.operators or []):
        what = f"subgraph {si} operator {k}"
        if not 0 <= op.opcodeIndex < len(kinds):
            raise ModelFileError(f"{what}: opcode index {op.opcodeIndex} out of range")
        op_ins, op_outs = _ints(op.inputs), _ints(op.outputs)
        if any(not -1 <= i < nt for i in op_ins) or any(not 0 <= i < nt for i in op_outs):
            raise ModelFileError(f"{what}: tensor index out of range ({nt} tensors)")
        for i in op_ins:
            if i >= 0 and not checker.const(i) and i not in written:
                raise ModelFileError(f"{what}: tensor {i} is read before it is written")
        for i in op_outs:
            if checker.const(i) or i in written or i in ins:
                raise ModelFileError(f"{what}: output tensor {i} is a constant or written twice")
            written.add(i)
        kind = kinds[op.opcodeIndex]
        if kind in _OPTIONS:
            checker.check(kind, op, what)
    for i in outs:
        if i not in written and not checker.const(i):
            raise ModelFileError(f"subgraph {si}: output tensor {i} is never written")


def _specs(sg: Any, indices: Any) -> list[TensorSpec]:
    specs = []
    for i in _ints(indices):
        t = sg.tensors[i]
        q = t.quantization
        scale = tuple(float(s) for s in (q.scale if q is not None and q.scale is not None else []))
        zps = tuple(_ints(q.zeroPoint) if q is not None else [])
        shape = tuple(_ints(t.shape))
        specs.append(TensorSpec(_name(t), shape, _TENSOR_TYPES[t.type][0], scale, zps))
    return specs


def activation_sizes(data: bytes) -> list[int]:
    """Sizes in bytes of the non-constant tensors of subgraph 0 (validated bytes only)."""
    fb = _schema()
    m = _parse(data, fb)
    out = []
    for t in m.subgraphs[0].tensors or []:
        buf = m.buffers[t.buffer].data
        if buf is None or len(buf) == 0:
            out.append(math.prod(_ints(t.shape)) * _TENSOR_TYPES[t.type][1])
    return out


def load_tflite_checked(data: bytes) -> None:
    """Raise ``ModelFileError`` unless ``data`` is a well-formed block TFLite model."""
    check_tflite(data)
