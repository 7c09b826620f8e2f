"""Int8 block graph: the one description both writers (ONNX, TFLite) serialise.

A block graph is a tiny dataflow graph in TFLite conventions: activations are NHWC,
int8 with per-tensor asymmetric quantization; conv weights are OHWI int8 with
per-output-channel symmetric scales (zero point 0); fully connected weights are (out, in)
int8; biases are int32 with scale = input_scale * weight_scale and zero point 0.

Because ONNX and TFLite files are written from the same ``BlockGraph``, they carry the
same quantization parameters by construction. The .tflite reader
(``ctxconv.blockgraph.tflite.reader``) parses files back into it. This module imports only
numpy, so the firmware simulator can use it without torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


class ModelFileError(ValueError):
    """A model or manifest file that is malformed, truncated or does not match its record."""


#: TFLite's fixed int8 quantization of an L2_NORMALIZATION output: (scale, zero point).
L2_NORM_QUANT = (1.0 / 128.0, 0)


@dataclass
class Quant:
    """Affine quantization: real = scale * (q - zero_point).

    ``axis`` is None for per-tensor parameters, else the channel axis of a
    per-channel tensor (``scale`` then has one entry per channel).
    """

    scale: np.ndarray  # float32, (1,) or (channels,)
    zero_point: np.ndarray  # int64, same shape as scale
    axis: int | None = None

    @staticmethod
    def per_tensor(scale: float, zero_point: int) -> Quant:
        return Quant(np.array([scale], np.float32), np.array([zero_point], np.int64), None)

    @property
    def is_per_channel(self) -> bool:
        return self.axis is not None


@dataclass
class Tensor:
    """A named tensor: an activation (``data`` None) or a constant (``data`` set)."""

    name: str
    shape: tuple[int, ...]
    dtype: str  # "int8" | "int32" | "float32"
    quant: Quant | None = None
    data: np.ndarray | None = None

    @property
    def is_constant(self) -> bool:
        return self.data is not None

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize


@dataclass
class Op:
    """One operator: ``kind`` is a key of ``ops.REGISTRY`` (its module lists its options)."""

    kind: str
    inputs: list[str]
    outputs: list[str]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class BlockGraph:
    """One block's int8 graph with named inputs and outputs (batch 1, NHWC)."""

    name: str
    tensors: dict[str, Tensor]
    ops: list[Op]
    inputs: list[str]
    outputs: list[str]

    def validate(self) -> None:
        """Raise ValueError naming the problem if a tensor name is unknown (the ops' kinds
        and options are checked by ``ops.validate_structure``)."""
        for op in self.ops:
            for name in op.inputs + op.outputs:
                if name not in self.tensors:
                    raise ValueError(
                        f"block {self.name!r}: op {op.kind} uses unknown tensor {name!r}"
                    )
        for name in self.inputs + self.outputs:
            if name not in self.tensors:
                raise ValueError(f"block {self.name!r}: graph endpoint {name!r} is not a tensor")

    def constants(self) -> list[Tensor]:
        return [t for t in self.tensors.values() if t.is_constant]

    def activations(self) -> list[Tensor]:
        return [t for t in self.tensors.values() if not t.is_constant]

def compute_padding(
    in_size: int, filter_size: int, stride: int, padding: str
) -> tuple[int, int, int]:
    """TFLite output size and (before, after) padding along one spatial axis.

    SAME: out = ceil(in / stride); VALID: out = floor((in - filter) / stride) + 1.
    total = max(0, (out - 1) * stride + filter - in); before = total // 2 (the
    odd pixel goes after), as in ComputePaddingHeightWidth.
    """
    if padding == "SAME":
        out = (in_size + stride - 1) // stride
    elif padding == "VALID":
        out = (in_size + stride - filter_size) // stride
    else:
        raise ValueError(f"padding must be 'SAME' or 'VALID', got {padding!r}")
    if out <= 0:
        raise ValueError(
            f"filter {filter_size} with stride {stride} and {padding} padding "
            f"leaves no output for input size {in_size}"
        )
    total = max(0, (out - 1) * stride + filter_size - in_size)
    return out, total // 2, total - total // 2


def context_dependent_ops(graph: BlockGraph) -> list[bool]:
    """Per op (graph order): does it read the ``context`` input, directly or through earlier
    ops? In multipass the others (e.g. the conv of the image in the im2col-bias form) run
    once per image and these once per candidate context."""
    dependent = {"context"} & set(graph.inputs)
    flags = []
    for op in graph.ops:
        reads = bool(dependent & set(op.inputs))
        if reads:
            dependent.update(op.outputs)
        flags.append(reads)
    return flags


def head_only_ops(graph: BlockGraph, features: str = "features") -> list[bool]:
    """Per op (graph order): is it outside what the ``features`` output depends on, so that
    only the block's other outputs (its head's scores) need it? None is, in a graph without
    that output."""
    wanted = {features}
    flags = [features in graph.outputs] * len(graph.ops)
    for j in range(len(graph.ops) - 1, -1, -1):
        if wanted & set(graph.ops[j].outputs):
            flags[j] = False
            wanted.update(graph.ops[j].inputs)
    return flags
