"""The frozen blocks before the one being trained, run as on the device.

Choice: the prefix runs with the simulator's int8 kernels on the int8 export
(``compile_graph``, bit-exact with TFLM), because that is what a device holding only the
int8 files in flash computes; its output batch stays int8 and is dequantized with the
trained block's input scale/zero point just before the float32 block. A float export
is run the same way with the float kernels (a host-side reference).
"""

from __future__ import annotations

import numpy as np

from ctxconv.blockgraph.bundle import ExportBundle
from ctxconv.blockgraph.ir import BlockGraph
from ctxconv.runtimes.reference import compile_graph

F32 = np.float32


def quantize_images(bundle: ExportBundle, raw: np.ndarray) -> np.ndarray:
    """Raw stored images (N, H, W, C) uint8 -> block 0's input (int8, or float32)."""
    norm = bundle.manifest["input"]
    x = raw.astype(F32) * F32(norm["pixel_scale"])
    x = (x - np.asarray(norm["mean"], F32)) / np.asarray(norm["std"], F32)
    t = bundle.graphs[0].tensors["features_in"]
    if t.quant is None:
        return x.astype(F32)
    scale, zp = float(t.quant.scale[0]), int(t.quant.zero_point[0])
    return np.clip(np.round(x / scale) + zp, -128, 127).astype(np.int8)


def dequantize_input(bundle: ExportBundle, index: int, x: np.ndarray) -> np.ndarray:
    """Block ``index``'s input batch as float32 (int8 -> scale * (q - zero_point))."""
    t = bundle.graphs[index].tensors["features_in"]
    if t.quant is None or x.dtype != np.int8:
        return x.astype(F32)
    return (F32(t.quant.scale[0]) * (x.astype(F32) - F32(t.quant.zero_point[0]))).astype(F32)


class FrozenPrefix:
    """Blocks < ``index`` of an export, compiled once; ``__call__`` maps raw images to the
    float32 input batch of block ``index``. ``graphs``: the block graphs to run instead of
    the export's (e.g. as a device holds them after training earlier blocks)."""

    def __init__(self, bundle: ExportBundle, index: int,
                 graphs: list[BlockGraph] | None = None) -> None:
        self.bundle, self.index = bundle, index
        self.graphs = [compile_graph(g) for g in (graphs or bundle.graphs)[:index]]
        for i, b in enumerate(bundle.blocks[:index]):
            if b.get("contextual"):
                raise ValueError(f"block {i} is contextual: the blocks after it were trained on "
                                 "a context-free prefix, so only the last block may be contextual")

    def quantized(self, raw: np.ndarray) -> np.ndarray:
        """Raw images -> block ``index``'s input batch as the device holds it (int8)."""
        x = quantize_images(self.bundle, raw)
        for g in self.graphs:
            x = g.run({"features_in": x})["features"]
        return x

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        return dequantize_input(self.bundle, self.index, self.quantized(raw))
