"""Block runners for each execution backend of the simulator.

- ``reference``: the simulator's own int8 kernels (numpy, bit-exact with TFLM), batched.
- ``tflm``: the real TensorFlow Lite Micro interpreter, given the planned arena; the
  arena is first tried in a child process so a too-small plan is an error, not a crash.
- ``litert``: LiteRT with its reference kernels; ``litert_optimized``: with its default
  (optimised) kernels.
- ``onnxruntime``: the block's ONNX file.

The export's verification and the simulator both take their runners from
``make_runners``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ctxconv.blockgraph.bundle import ExportBundle
from ctxconv.memory.tflm import plan_block
from ctxconv.runtimes.reference import compile_graph
from ctxconv.runtimes.runners import LiteRTRunner, OnnxRunner, TFLMRunner

#: The simulator's backends (``litert_optimized`` is the export's extra comparison).
BACKENDS = ("reference", "tflm", "litert", "onnxruntime")


class ReferenceRunner:
    """The simulator's kernels over a whole batch."""

    def __init__(self, graph) -> None:
        self.graph = graph
        self._compiled = compile_graph(graph)

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._compiled.run(inputs)


def make_runners(bundle: ExportBundle, backend: str,
                 arenas: list[int] | None = None) -> list[Any]:
    """One runner per block; ``tflm`` gets ``arenas`` (bytes per block), by default the
    planner's figure for the host build of TFLM (an MCU profile's plan is for a 32-bit
    build and is smaller than what the host interpreter needs)."""
    if backend == "reference":
        return [ReferenceRunner(g) for g in bundle.graphs]
    if backend == "tflm":
        if arenas is None:  # what the host's 64-bit TFLM with reference kernels needs
            arenas = [plan_block(g, t).arena_bytes for g, t in zip(bundle.graphs, bundle.tflite,
                                                                   strict=True)]
        return [TFLMRunner(data, arena, name=str(bundle.file(i, "tflite")))
                for i, (data, arena) in enumerate(zip(bundle.tflite, arenas, strict=True))]
    if backend in ("litert", "litert_optimized"):
        return [LiteRTRunner(data, reference_kernels=backend == "litert",
                             name=str(bundle.file(i, "tflite")))
                for i, data in enumerate(bundle.tflite)]
    if backend == "onnxruntime":
        return [OnnxRunner(bundle.file(i, "onnx")) for i in range(len(bundle.blocks))]
    raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
