"""What every op module shares: tensor look-ups, the activation range, host-only fields.

An op module (``conv2d``, ``fully_connected``, ...) holds one op's checks (``validate``),
its run-time parameters (``prepare`` -> a frozen ``Params`` dataclass), its numpy
reference (``reference``), its work (``macs``), its scratch bytes and its in-place rule.
An int8 ``Params`` class names the C struct of ``ctxconv_kernels.h`` it fills
(``C_STRUCT``); its fields are that struct's fields, in order, except the ones declared
with ``host()`` (read by the numpy reference only, never written to C).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ctxconv.blockgraph.fixedpoint import activation_range_int8, quant_scale
from ctxconv.blockgraph.ir import BlockGraph, Op, Tensor


def host(**kwargs: Any) -> Any:
    """A Params field the numpy reference reads and the C struct does not have."""
    return dataclasses.field(metadata={"c": False}, **kwargs)


def c_fields(params_type: type) -> list[str]:
    """The fields of a Params dataclass that its C struct holds, in order."""
    return [f.name for f in dataclasses.fields(params_type) if f.metadata.get("c", True)]


def describe(graph: BlockGraph, op: Op) -> str:
    """``block 'NAME' op KIND -> 'OUTPUT'``: the subject of an op's error messages."""
    return f"block {graph.name!r} op {op.kind} -> {op.outputs[0]!r}"


def tensor(graph: BlockGraph, op: Op, i: int) -> Tensor:
    """The op's input ``i``."""
    return graph.tensors[op.inputs[i]]


def output(graph: BlockGraph, op: Op) -> Tensor:
    """The op's (only) output."""
    return graph.tensors[op.outputs[0]]


def is_int8(graph: BlockGraph, op: Op) -> bool:
    """True for an int8 op, False for a float32 one; ValueError for any other input."""
    dtype = tensor(graph, op, 0).dtype
    if dtype not in ("int8", "float32"):
        raise ValueError(f"{describe(graph, op)}: unsupported input dtype {dtype}")
    return dtype == "int8"


def zero_point(t: Tensor) -> int:
    """A per-tensor zero point (0 without quantization)."""
    return 0 if t.quant is None else int(t.quant.zero_point[0])


def scale(t: Tensor, what: str) -> float:
    """A per-tensor scale as TFLite stores it (float32), ValueError when absent."""
    return quant_scale(t.quant, what)


def relu(op: Op) -> bool:
    """The op's fused RELU."""
    return bool(op.options.get("relu", False))


def act_range(graph: BlockGraph, op: Op) -> tuple[int, int]:
    """The int8 clamp range of the op's output (TFLM's CalculateActivationRangeQuantized)."""
    out = output(graph, op)
    return activation_range_int8(relu(op), scale(out, describe(graph, op)), zero_point(out))


def pair(v: object, what: str) -> tuple[int, int]:
    """An (h, w) option as two ints."""
    try:
        a, b = (int(x) for x in v)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a pair (h, w), got {v!r}") from None
    return a, b


def weights_bias(graph: BlockGraph, op: Op) -> tuple[np.ndarray, np.ndarray | None]:
    """The constant weight and (optional) bias of a conv or fully connected op."""
    w = tensor(graph, op, 1)
    b = tensor(graph, op, 2) if len(op.inputs) > 2 and op.inputs[2] else None
    if w.data is None or (b is not None and b.data is None):
        raise ValueError(f"{describe(graph, op)}: weight and bias must be constant tensors")
    return w.data, None if b is None else b.data


def check_symmetric_weights(graph: BlockGraph, op: Op) -> None:
    """int8 weights are symmetric (zero point 0), as TFLM's int8 conv and FC require."""
    w = tensor(graph, op, 1)
    if w.quant is None or np.any(w.quant.zero_point != 0):
        raise ValueError(f"{describe(graph, op)}: weight {w.name!r} must be symmetric int8")


def elements(shape: tuple[int, ...]) -> int:
    """Number of elements of a shape."""
    return int(np.prod(shape, dtype=np.int64))


def check_int32_accumulator(graph: BlockGraph, op: Op) -> None:
    """|acc| <= 255 * max row L1 + max |bias| must fit int32 (the C kernels keep int32
    accumulators and, unlike the numpy reference, do not emulate a wrap)."""
    wd, bd = weights_bias(graph, op)
    w = wd.astype(np.int64).reshape(wd.shape[0], -1)
    bound = 255 * int(np.abs(w).sum(axis=1).max(initial=0)) + (
        0 if bd is None else int(np.abs(bd.astype(np.int64)).max(initial=0)))
    if bound >= 1 << 31:
        raise ValueError(f"{op.kind} accumulator can reach {bound}, beyond int32; the C "
                         "kernels keep int32 accumulators")


# ------------------------------------------------- elementwise ops (ADD, MUL)


def elementwise_macs(graph: BlockGraph, op: Op) -> int:
    """Output elements."""
    return elements(output(graph, op).shape)


def no_scratch(graph: BlockGraph, op: Op) -> int:
    """No scratch."""
    return 0


def elementwise_in_place(graph: BlockGraph, op: Op) -> bool:
    """Elementwise into the first operand when it is an activation of the output's size."""
    a, out = tensor(graph, op, 0), output(graph, op)
    return a.nbytes == out.nbytes and not a.is_constant


def check_trailing_block(kind: str, a: Tensor, b: Tensor, out: Tensor) -> None:
    """The C elementwise kernels repeat the second operand, a trailing block of the output
    (its leading ones dropped), along the first, which has the output's shape."""
    lead = next((i for i, d in enumerate(b.shape) if d != 1), len(b.shape))
    block = tuple(b.shape[lead:])
    if tuple(a.shape) != tuple(out.shape) or block != tuple(out.shape)[
            len(out.shape) - len(block):]:
        sign = "+" if kind == "ADD" else "*"
        raise ValueError(f"{kind} {a.shape} {sign} {b.shape} -> {out.shape}: the C kernel "
                         "broadcasts only a trailing block of the second operand")


def broadcast_shape(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...] | None:
    """numpy/TFLite broadcasting of two shapes (right-aligned), None when they do not."""
    n = max(len(a), len(b))
    a, b = (1,) * (n - len(a)) + tuple(a), (1,) * (n - len(b)) + tuple(b)
    if any(x != y and 1 not in (x, y) for x, y in zip(a, b, strict=True)):
        return None
    return tuple(max(x, y) for x, y in zip(a, b, strict=True))


def validate_broadcast(graph: BlockGraph, op: Op) -> None:
    """ADD and MUL: two operands of rank <= 4 broadcasting to the output."""
    what = describe(graph, op)
    a, b, out = tensor(graph, op, 0), tensor(graph, op, 1), output(graph, op)
    if max(len(a.shape), len(b.shape)) > 4:
        raise ValueError(f"{what}: inputs of rank > 4 are not supported")
    if broadcast_shape(a.shape, b.shape) != tuple(out.shape):
        raise ValueError(f"{what}: shapes {a.shape} and {b.shape} do not broadcast to "
                         f"{out.shape}")
