"""Trainable blocks from an export directory (float or int8) or a seeded random init.

The float export (``ctxconv-export RUN_DIR``, default RUN_DIR/export-float) holds the
folded float32 weights exactly; an int8 export's weights are dequantized (per-channel
scale; int32 biases times their scale), which is what a device holding only the int8
files would start from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ctxconv.blockgraph.bundle import ExportBundle, load_export
from ctxconv.blockgraph.geometry import BlockGeometry
from ctxconv.blockgraph.ir import BlockGraph, ModelFileError
from ctxconv.ondevice.block import TrainableBlock, random_params
from ctxconv.ondevice.support import require_trainable

F32 = np.float32


def geometry(bundle_or_manifest: ExportBundle | dict[str, Any], index: int) -> BlockGeometry:
    """Geometry of block ``index`` from an export's manifest; UnsupportedBlockError for a
    block with a layer on-device training does not model (FiLM, energy goodness, L2 norm)."""
    bundle = bundle_or_manifest if isinstance(bundle_or_manifest, ExportBundle) else None
    m = bundle.manifest if bundle is not None else bundle_or_manifest
    try:
        b = m["blocks"][index]
        graph = bundle.graphs[index] if bundle is not None else None
    except (KeyError, IndexError, TypeError) as exc:
        raise ModelFileError(f"manifest block {index} is missing: {exc}") from exc
    if isinstance(b, dict):
        require_trainable(b, graph, index)
    try:
        shape = b["inputs"][0]["shape"]  # (1, H, W, C)
        return BlockGeometry(in_size=int(shape[1]), in_channels=int(shape[3]),
                             pool=int(b["pool"]), kernel=int(b["kernel"]),
                             filters=int(b["filters"]),
                             num_classes=int(m["dataset"]["num_classes"]),
                             head_grid=int(b["head_grid"]), contextual=bool(b["contextual"]))
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise ModelFileError(f"manifest block {index} lacks geometry fields "
                             f"(pool, kernel, filters, head_grid, inputs): {exc}") from exc


def geometries(bundle: ExportBundle) -> list[BlockGeometry]:
    return [geometry(bundle, i) for i in range(len(bundle.blocks))]


def _dequantized(graph: BlockGraph, name: str) -> np.ndarray:
    t = graph.tensors.get(name)
    if t is None or t.data is None:
        raise ModelFileError(f"block graph {graph.name!r} has no constant {name!r}")
    data = t.data.astype(F32)
    if t.quant is None or t.dtype == "float32":
        return data
    scale = np.asarray(t.quant.scale, F32)
    zp = np.asarray(t.quant.zero_point, F32)
    if t.quant.axis is not None and scale.size > 1:
        shape = [1] * data.ndim
        shape[t.quant.axis] = -1
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    return ((data - zp) * scale).astype(F32)


def params_from_graph(graph: BlockGraph, geom: BlockGeometry) -> dict[str, np.ndarray]:
    """The block's parameters (conv OHWI, head in NHWC flatten order) from its graph."""
    out = {name: _dequantized(graph, name) for name in geom.param_shapes()}
    for name, shape in geom.param_shapes().items():
        if tuple(out[name].shape) != shape:
            raise ModelFileError(f"block graph {graph.name!r}: {name!r} has shape "
                                 f"{out[name].shape}, the manifest implies {shape}")
    return out


def block_from_export(export: str | Path | ExportBundle, index: int) -> TrainableBlock:
    """Block ``index`` of an export, ready to train (float32)."""
    bundle = export if isinstance(export, ExportBundle) else load_export(export)
    if not 0 <= index < len(bundle.graphs):
        raise ValueError(f"block {index} does not exist (the export has "
                         f"{len(bundle.graphs)} blocks)")
    geom = geometry(bundle, index)
    return TrainableBlock(geom, params_from_graph(bundle.graphs[index], geom))


def block_from_init(geom: BlockGeometry, seed: int = 0) -> TrainableBlock:
    """A block of the given geometry with a seeded random init."""
    return TrainableBlock(geom, random_params(geom, seed))
