"""RESHAPE: a view. TFLM copies the bytes (quantization is shared); the C library aliases
the output to the input's bytes; the numpy reference reshapes with the batch on axis 0."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ctxconv.blockgraph.ir import BlockGraph, Op
from ctxconv.blockgraph.ops import base

#: op kind -> the options it reads: shape (the target shape)
KINDS = {"RESHAPE": ("shape",)}
#: Two operands broadcast against each other (the interpreter aligns their ranks).
BROADCASTS = False
#: The MCU cost-model field (``McuProfile.cost``) charged per unit of ``macs``.
COST_FIELD = None
#: TFLM's persistent bytes: TfLiteReshapeParams, no OpData.
TFLM_BUILTIN_BYTES = 40
TFLM_OP_DATA_BYTES = 0
#: The C library has no kernel for it: the output is a view of the input.
IS_VIEW = True


@dataclass(frozen=True, eq=False)
class ReshapeParams:
    """The target shape (batch 1 on axis 0)."""

    shape: tuple[int, ...]


def validate(graph: BlockGraph, op: Op) -> None:
    """Same element count in and out."""
    x, out = base.tensor(graph, op, 0), base.output(graph, op)
    if base.elements(x.shape) != base.elements(out.shape):
        raise ValueError(f"{base.describe(graph, op)}: element counts differ "
                         f"({x.shape} -> {out.shape})")


def prepare(graph: BlockGraph, op: Op) -> ReshapeParams:
    """The output shape."""
    return ReshapeParams(tuple(int(d) for d in base.output(graph, op).shape))


def reference(p: ReshapeParams, inputs: list[np.ndarray]) -> np.ndarray:
    """(N, ...) -> (N, *shape[1:]); any dtype, data untouched."""
    x = inputs[0]
    return x.reshape((x.shape[0], *p.shape[1:]))


def macs(graph: BlockGraph, op: Op) -> int:
    """No work."""
    return 0


c_scratch_bytes = base.no_scratch


def in_place(graph: BlockGraph, op: Op) -> bool:
    """A view, not a kernel: the layout aliases it rather than running it in place."""
    return False
