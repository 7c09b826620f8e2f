"""Serialise a ``BlockGraph`` to ONNX, with the same interface as the TFLite file.

Graph inputs and outputs keep the TFLite names, NHWC layout and dtype (int8 for
quantized graphs); only the batch dim is symbolic (``"N"``) so whole batches run at
once. Int8 graphs are written in QDQ form: every op is DequantizeLinear -> float op
-> QuantizeLinear, weights are int8 initializers (per-channel DequantizeLinear on
axis 0) and biases int32, which onnxruntime fuses into QLinearConv, QGemm, etc.
The exception is the int8 AVERAGE_POOL_2D, written as small exact float arithmetic
that reproduces TFLite's rounding (see ``_int8_average_pool``). Conv and pooling run
in NCHW; Transposes are inserted on the int8 tensors (exact) only where the layout
changes. Float graphs become plain float ONNX.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from ctxconv.blockgraph.ir import BlockGraph, Op, Quant, Tensor
from ctxconv.blockgraph.tflite.writer import check_graph, same_pads

#: Default opset of the ``ai.onnx`` domain (onnxruntime fuses QDQ for opset >= 13).
OPSET = 21
#: IR version that goes with ``OPSET`` (onnx 1.16+, onnxruntime 1.17+).
IR_VERSION = 10
#: Key of the metadata entry holding each graph input's and output's quantization.
QUANT_METADATA_KEY = "ctxconv.io_quantization"

_NHWC_TO_NCHW = [0, 3, 1, 2]
_NCHW_TO_NHWC = [0, 2, 3, 1]
_ONNX_DTYPES = {"float32": "FLOAT", "int8": "INT8", "int32": "INT32"}


def _io_record(t: Tensor) -> dict[str, Any]:
    rec: dict[str, Any] = {"dtype": t.dtype, "shape": ["N", *[int(d) for d in t.shape[1:]]]}
    if t.quant is not None:
        rec["scale"] = [float(s) for s in np.asarray(t.quant.scale).reshape(-1)]
        rec["zero_point"] = [int(z) for z in np.asarray(t.quant.zero_point).reshape(-1)]
    return rec


class _Builder:
    """Accumulates nodes and initializers; tracks each tensor's layout (NHWC/NCHW)."""

    def __init__(self, graph: BlockGraph, quantized: bool, exact_avgpool: bool) -> None:
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.graph = graph
        self.quantized = quantized
        self.exact_avgpool = exact_avgpool
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.used: set[str] = set(graph.tensors)
        self.layout: dict[str, str] = {}  # graph tensor name -> layout of its ONNX value
        self.views: dict[tuple[str, str], str] = {}  # (name, layout) -> ONNX value name
        self.finals: dict[tuple[str, str], str] = {}
        self.init_names: set[str] = set()

    def fresh(self, base: str) -> str:
        name, i = base, 1
        while name in self.used:
            name, i = f"{base}_{i}", i + 1
        self.used.add(name)
        return name

    def node(
        self, op_type: str, inputs: list[str], base: str, out: str | None = None, **attrs: Any
    ) -> str:
        """Append a node; its output is ``out`` if given, else a fresh name from ``base``."""
        out = out or self.fresh(base)
        name = self.fresh(f"{base}/{op_type}")
        self.nodes.append(self.helper.make_node(op_type, inputs, [out], name=name, **attrs))
        return out

    def init(self, base: str, array: np.ndarray, exact: bool = False) -> str:
        """Add an initializer named ``base`` (a reserved graph name) if ``exact``."""
        name = base if exact and base not in self.init_names else self.fresh(base)
        self.init_names.add(name)
        self.inits.append(self.numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def const(self, name: str, array: np.ndarray) -> str:
        """Initializer for graph constant ``name``: named like it on first use."""
        key = (name, "init")
        if key not in self.views:
            self.views[key] = self.init(name, array, exact=True)
            return self.views[key]
        return self.init(name, array)

    # ---------------------------------------------------------------- quantization

    def _qparams(self, base: str, q: Quant, zp_dtype: type) -> tuple[str, str, int | None]:
        scale = np.asarray(q.scale, np.float32).reshape(-1)
        zp = np.asarray(q.zero_point).reshape(-1).astype(zp_dtype)
        if q.axis is None:
            scale, zp = scale.reshape(()), zp.reshape(())
        return self.init(f"{base}/scale", scale), self.init(f"{base}/zero_point", zp), q.axis

    def dequantize(self, value: str, t: Tensor) -> str:
        """Float view of the int ONNX value ``value`` quantized like ``t``."""
        assert t.quant is not None
        zp_dtype = np.int32 if t.dtype == "int32" else np.int8
        s, z, axis = self._qparams(t.name, t.quant, zp_dtype)
        attrs = {} if axis is None else {"axis": 0}
        return self.node("DequantizeLinear", [value, s, z], f"{t.name}/dq", **attrs)

    def quantize_to(self, value: str, t: Tensor, out: str | None) -> str:
        assert t.quant is not None
        s, z, _ = self._qparams(f"{t.name}/q", t.quant, np.int8)
        return self.node("QuantizeLinear", [value, s, z], f"{t.name}/q", out)

    # ---------------------------------------------------------------- values

    def value(self, name: str, layout: str | None = None) -> str:
        """ONNX value of graph tensor ``name`` (int8 or float) in ``layout`` if 4-D."""
        t = self.graph.tensors[name]
        if t.is_constant:
            data = np.asarray(t.data)
            if layout == "NCHW" and data.ndim == 4:
                data = data.transpose(_NHWC_TO_NCHW)
            key = (name, layout or "NHWC")
            if key not in self.views:
                self.views[key] = self.init(name, data, exact=key[1] == "NHWC")
            return self.views[key]
        have = self.layout.get(name, "NHWC")
        if layout is None or len(t.shape) != 4 or layout == have:
            return self.views[(name, have)]
        key = (name, layout)
        if key not in self.views:
            perm = _NHWC_TO_NCHW if layout == "NCHW" else _NCHW_TO_NHWC
            src = self.views[(name, have)]
            out = name if layout == "NHWC" else None
            self.views[key] = self.node("Transpose", [src], f"{name}/nchw", out, perm=perm)
        return self.views[key]

    def real(self, name: str, layout: str | None = None) -> str:
        """Float value of graph tensor ``name`` (dequantized in int8 graphs)."""
        v = self.value(name, layout)
        return self.dequantize(v, self.graph.tensors[name]) if self.quantized else v

    def final_name(self, op: Op, layout: str) -> str:
        """Name of the op output's value; the NHWC value of a tensor is named like it."""
        name = op.outputs[0]
        if (name, layout) not in self.finals:
            self.finals[(name, layout)] = name if layout == "NHWC" else self.fresh(f"{name}/nchw")
        return self.finals[(name, layout)]

    def target(self, op: Op, layout: str) -> str | None:
        """Output name for the op's main node: the final name if no Relu/Q follows it."""
        if self.quantized or self._needs_relu(op):
            return None
        return self.final_name(op, layout)

    def _needs_relu(self, op: Op) -> bool:
        """Fused relu, unless QuantizeLinear's saturation already implies it.

        Q(relu(y)) == max(Q(y), zero_point), so with zero point -128 the Relu is a
        no-op; leaving it out lets onnxruntime fuse the QDQ group (QLinearConv).
        """
        if not op.options.get("relu", False):
            return False
        q = self.graph.tensors[op.outputs[0]].quant
        return not (self.quantized and q is not None and int(q.zero_point[0]) == -128)

    def set_int_output(self, op: Op, value: str, layout: str) -> None:
        """Bind an op output computed directly as int8, named ``final_name(op, layout)``."""
        assert value == self.final_name(op, layout)
        self.layout[op.outputs[0]] = layout
        self.views[(op.outputs[0], layout)] = value

    def set_output(self, op: Op, real_value: str, layout: str) -> None:
        """Apply the fused relu, requantize, and bind the op's output tensor."""
        out = self.graph.tensors[op.outputs[0]]
        final = self.final_name(op, layout)
        if self._needs_relu(op):
            relu_out = None if self.quantized else final
            real_value = self.node("Relu", [real_value], f"{out.name}/relu", relu_out)
        if self.quantized:
            real_value = self.quantize_to(real_value, out, final)
        assert real_value == final
        self.layout[out.name] = layout
        self.views[(out.name, layout)] = final


def _pads(x: Tensor, kernel: tuple[int, int], stride: tuple[int, int], padding: str) -> list[int]:
    """ONNX pads [top, left, bottom, right] reproducing TF SAME/VALID."""
    if str(padding).upper() == "VALID":
        return [0, 0, 0, 0]
    (t, b), (left, r) = (same_pads(x.shape[i + 1], kernel[i], stride[i]) for i in range(2))
    return [t, left, b, r]


def _int8_average_pool(b: _Builder, op: Op) -> str:
    """TFLite's int8 AVERAGE_POOL_2D, bit-exact: (N, C, H, W) int8 -> (N, C, OH, OW) int8.

    TFLite sums the raw int8 values of each window (padding excluded), then divides by
    the window count rounding half away from zero; input and output share scale and
    zero point. The QDQ form (dequantize, average, QuantizeLinear) rounds half to even
    instead, which differs by 1 LSB on most ties (frequent with 2x2 windows) and the
    error then grows through later layers. Here the sums come from a depthwise all-ones
    Conv (exact in float32), the per-position counts are a constant, and the division
    is trunc((s + sign(s) * (c // 2)) / c), all in float32 on small integers (exact).
    """
    import onnx

    x = b.graph.tensors[op.inputs[0]]
    out = b.graph.tensors[op.outputs[0]]
    _, h, w, c = x.shape
    kh, kw = (int(k) for k in op.options["filter"])
    stride = [int(s) for s in op.options["stride"]]
    pads = _pads(x, (kh, kw), (stride[0], stride[1]), op.options["padding"])
    name = out.name
    # raw int8 values as float, recovered from the DequantizeLinear output (exact after
    # Round) so the producer keeps its Q -> DQ pair and stays fusable (QLinearConv)
    assert x.quant is not None
    scale = b.init(f"{name}/in_scale", np.asarray(x.quant.scale[0], np.float32))
    zp = b.init(f"{name}/in_zero_point", np.asarray(x.quant.zero_point[0], np.float32))
    shifted = b.node("Div", [b.real(x.name, "NCHW"), scale], f"{name}/unscale")
    xf = b.node("Add", [b.node("Round", [shifted], f"{name}/round"), zp], f"{name}/raw")
    ones = b.init(f"{name}/ones", np.ones((c, 1, kh, kw), np.float32))
    conv = {"kernel_shape": [kh, kw], "strides": stride, "pads": pads}
    total = b.node("Conv", [xf, ones], f"{name}/sum", group=c, **conv)  # (N, C, OH, OW)
    ones_map = np.ones((1, 1, h, w), np.float32)
    counts = _np_window_sums(ones_map, (kh, kw), stride, pads)  # (1, 1, OH, OW)
    count = b.init(f"{name}/count", counts)
    half = b.init(f"{name}/half_count", np.floor(counts / 2).astype(np.float32))
    sign = b.node("Sign", [total], f"{name}/sign")
    num = b.node("Add", [total, b.node("Mul", [sign, half], f"{name}/nudge")], f"{name}/num")
    quot = b.node("Div", [b.node("Abs", [num], f"{name}/abs"), count], f"{name}/quot")
    res = b.node("Mul", [b.node("Sign", [num], f"{name}/nsign"),
                         b.node("Floor", [quot], f"{name}/floor")], f"{name}/trunc")  # fmt: skip
    final = b.final_name(op, "NCHW")
    return b.node("Cast", [res], f"{name}/int8", final, to=onnx.TensorProto.INT8)


def _np_window_sums(
    x: np.ndarray, kernel: tuple[int, int], stride: list[int], pads: list[int]
) -> np.ndarray:
    """Window sums of x (1, 1, H, W) with zero padding [top, left, bottom, right]."""
    xp = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    oh = (xp.shape[2] - kernel[0]) // stride[0] + 1
    ow = (xp.shape[3] - kernel[1]) // stride[1] + 1
    out = np.zeros((1, 1, oh, ow), np.float32)
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            out += xp[:, :, i : i + stride[0] * (oh - 1) + 1 : stride[0],
                      j : j + stride[1] * (ow - 1) + 1 : stride[1]]  # fmt: skip
    return out


def _emit(b: _Builder, op: Op) -> None:
    g = b.graph
    x = g.tensors[op.inputs[0]]
    o = op.options
    if op.kind in ("MAX_POOL_2D", "AVERAGE_POOL_2D", "CONV_2D"):
        stride = tuple(int(s) for s in o["stride"])
        if op.kind == "CONV_2D":
            w, bias = g.tensors[op.inputs[1]], g.tensors[op.inputs[2]]
            kernel = tuple(int(k) for k in w.shape[1:3])
            wv = b.const(w.name, np.asarray(w.data).transpose(0, 3, 1, 2))  # OHWI -> OIHW
            bv = b.const(bias.name, np.asarray(bias.data))
            if b.quantized:
                wv, bv = b.dequantize(wv, w), b.dequantize(bv, bias)
            y = b.node(
                "Conv", [b.real(x.name, "NCHW"), wv, bv], f"{op.outputs[0]}/conv",
                b.target(op, "NCHW"),
                kernel_shape=list(kernel), strides=list(stride),
                pads=_pads(x, kernel, stride, o["padding"]), dilations=[1, 1], group=1,
            )  # fmt: skip
        elif op.kind == "AVERAGE_POOL_2D" and b.quantized and b.exact_avgpool:
            b.set_int_output(op, _int8_average_pool(b, op), "NCHW")
            return
        else:
            kernel = tuple(int(k) for k in o["filter"])
            onnx_op = "MaxPool" if op.kind == "MAX_POOL_2D" else "AveragePool"
            extra = {"count_include_pad": 0} if onnx_op == "AveragePool" else {}
            y = b.node(
                onnx_op, [b.real(x.name, "NCHW")], f"{op.outputs[0]}/pool", b.target(op, "NCHW"),
                kernel_shape=list(kernel), strides=list(stride),
                pads=_pads(x, kernel, stride, o["padding"]), **extra,
            )  # fmt: skip
        b.set_output(op, y, "NCHW")
    elif op.kind == "FULLY_CONNECTED":
        w, bias = g.tensors[op.inputs[1]], g.tensors[op.inputs[2]]
        wv, bv = b.const(w.name, np.asarray(w.data)), b.const(bias.name, np.asarray(bias.data))
        if b.quantized:
            wv, bv = b.dequantize(wv, w), b.dequantize(bv, bias)
        # x (N, in) . W(out, in)^T + b -> (N, out)
        y = b.node(
            "Gemm", [b.real(x.name), wv, bv], f"{op.outputs[0]}/gemm", b.target(op, "NHWC"),
            transB=1,
        )  # fmt: skip
        b.set_output(op, y, "NHWC")
    elif op.kind in ("ADD", "MUL"):
        layout = b.layout.get(x.name, "NHWC")
        args = [b.real(x.name, layout), b.real(op.inputs[1], layout)]
        onnx_op = op.kind.capitalize()  # Add | Mul
        y = b.node(onnx_op, args, f"{op.outputs[0]}/{op.kind.lower()}", b.target(op, layout))
        b.set_output(op, y, layout)
    elif op.kind == "MEAN":  # axes index the NHWC tensor
        axes = b.init(f"{op.outputs[0]}/axes", np.asarray(o["axes"], np.int64))
        y = b.node("ReduceMean", [b.real(x.name, "NHWC"), axes], f"{op.outputs[0]}/mean",
                   b.target(op, "NHWC"), keepdims=int(bool(o["keep_dims"])))
        b.set_output(op, y, "NHWC")
    elif op.kind == "L2_NORMALIZATION":  # over the last (NHWC) axis
        y = b.node("LpNormalization", [b.real(x.name, "NHWC")], f"{op.outputs[0]}/l2",
                   b.target(op, "NHWC"), axis=-1, p=2)
        b.set_output(op, y, "NHWC")
    elif op.kind == "RESHAPE":
        out = g.tensors[op.outputs[0]]
        # copy the (batch) dim 0, then the target dims: flattening follows NHWC order
        shape = b.init(f"{out.name}/shape", np.asarray([0, *out.shape[1:]], np.int64))
        y = b.node("Reshape", [b.value(x.name, "NHWC"), shape], out.name, out.name)
        b.layout[out.name] = "NHWC"
        b.views[(out.name, "NHWC")] = y
    else:  # pragma: no cover - check_graph rejects unknown ops first
        raise ValueError(f"op {op.kind!r} is not supported by the ONNX writer")


def write_onnx(graph: BlockGraph, opset: int = OPSET, exact_avgpool: bool = True) -> bytes:
    """Serialise ``graph`` to ONNX ModelProto bytes (checked with ``full_check``).

    Inputs/outputs: same names, NHWC layout and dtype as the TFLite file, batch dim
    ``"N"``. The quantization of each input/output is stored in the metadata entry
    ``QUANT_METADATA_KEY`` (JSON) and in the value's doc_string.
    """
    import onnx
    from onnx import helper

    dtype = check_graph(graph)
    b = _Builder(graph, quantized=dtype == "int8", exact_avgpool=exact_avgpool)
    for name in graph.inputs:
        b.layout[name] = "NHWC"
        b.views[(name, "NHWC")] = name
    for op in graph.ops:
        _emit(b, op)

    def io_value(name: str) -> Any:
        t = graph.tensors[name]
        elem = getattr(onnx.TensorProto, _ONNX_DTYPES[t.dtype])
        info = helper.make_tensor_value_info(name, elem, ["N", *[int(d) for d in t.shape[1:]]])
        info.doc_string = json.dumps(_io_record(t))
        return info

    for name in graph.outputs:
        b.value(name, "NHWC")  # adds the Transpose back to NHWC if needed
    if len(set(graph.inputs) | set(graph.outputs)) != len(graph.inputs) + len(graph.outputs):
        raise ValueError(f"block {graph.name!r}: a graph input is also an output")

    onnx_graph = helper.make_graph(
        b.nodes, graph.name, [io_value(n) for n in graph.inputs],
        [io_value(n) for n in graph.outputs], initializer=b.inits,
    )  # fmt: skip
    model = helper.make_model(
        onnx_graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="ctxconv",
        ir_version=IR_VERSION,
    )  # fmt: skip
    io = {n: _io_record(graph.tensors[n]) for n in [*graph.inputs, *graph.outputs]}
    helper.set_model_props(model, {QUANT_METADATA_KEY: json.dumps(io), "layout": "NHWC"})
    model.doc_string = f"ctxconv block {graph.name!r} ({dtype}, NHWC inputs/outputs)"
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()
