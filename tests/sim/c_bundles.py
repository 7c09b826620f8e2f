"""Random int8 graphs as one-block exports, to cross-check the generated C with the kernels.

``as_block`` turns any single-input graph of ``fw_graphs`` into a pipeline block (input
``features_in``, output ``features``, plus a random int8 class-score head), and
``bundle_of`` writes the C library of such blocks and returns the ``ExportBundle`` the
firmware checks read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ctxconv.blockgraph.bundle import ExportBundle
from ctxconv.blockgraph.ir import BlockGraph, Op, Quant, Tensor
from ctxconv.blockgraph.manifest import FORMAT, io_records
from ctxconv.blockgraph.tflite.writer import write_tflite
from ctxconv.codegen import write_c_library

K = 10


def as_block(graph: BlockGraph, name: str, seed: int) -> BlockGraph:
    """Rename input/output to features_in/features and add RESHAPE + FC (K scores)."""
    rng = np.random.default_rng(seed)
    rename = {graph.inputs[0]: "features_in", graph.outputs[0]: "features"}
    tensors = {}
    for old, t in graph.tensors.items():
        new = rename.get(old, old)
        tensors[new] = Tensor(new, t.shape, t.dtype, t.quant, t.data)
    ops = [Op(op.kind, [rename.get(n, n) for n in op.inputs],
              [rename.get(n, n) for n in op.outputs], dict(op.options)) for op in graph.ops]
    feat = tensors["features"]
    n = int(np.prod(feat.shape))
    tensors["head_flat"] = Tensor("head_flat", (1, n), "int8", feat.quant)
    w_s = rng.uniform(0.002, 0.02, K).astype(np.float32)
    tensors["head_w"] = Tensor("head_w", (K, n), "int8", Quant(w_s, np.zeros(K, np.int64), 0),
                               rng.integers(-127, 128, (K, n)).astype(np.int8))
    b_s = (np.float32(feat.quant.scale[0]) * w_s).astype(np.float32)
    tensors["head_b"] = Tensor("head_b", (K,), "int32", Quant(b_s, np.zeros(K, np.int64), 0),
                               rng.integers(-500, 500, K).astype(np.int32))
    out_s = float(feat.quant.scale[0] * w_s.mean() * np.sqrt(n) * 60)
    tensors["scores"] = Tensor("scores", (1, K), "int8", Quant.per_tensor(out_s, 3))
    ops += [Op("RESHAPE", ["features"], ["head_flat"], {"shape": (1, n)}),
            Op("FULLY_CONNECTED", ["head_flat", "head_w", "head_b"], ["scores"], {"relu": False})]
    block = BlockGraph(name, tensors, ops, ["features_in"], ["features", "scores"])
    block.validate()
    return block


def bundle_of(blocks: list[BlockGraph], path: Path, contextual: tuple[int, ...] = (),
              unscored: tuple[int, ...] = (), pixel_scale: float = 1 / 255) -> ExportBundle:
    """A minimal int8 export of ``blocks`` with its C library: context-free and scoring
    except the blocks listed in ``contextual`` / ``unscored``."""
    _, h, w, c = blocks[0].tensors["features_in"].shape
    manifest = {
        "format": FORMAT, "int8": True,
        "dataset": {"name": "random", "num_classes": K, "class_names": [str(i) for i in range(K)],
                    "image_size": h, "in_channels": c},
        "input": {"layout": "NHWC", "pixel_scale": pixel_scale, "mean": [0.5] * c,
                  "std": [0.25] * c},
        "context": {"dtype": "int8", "scale": 1 / 255, "zero_point": -128, "on": 127,
                    "off": -128},
        "modes": ["multipass"] if contextual else ["multipass", "onepass"],
        "score_blocks": [i for i in range(len(blocks)) if i not in unscored],
        "blocks": [{"name": g.name, "index": i, "contextual": i in contextual,
                    "score_block": i not in unscored,
                    "files": {"tflite": f"{g.name}.tflite"}, "inputs": io_records(g, g.inputs),
                    "outputs": io_records(g, g.outputs), "macs": 1}
                   for i, g in enumerate(blocks)],
        "files": {},
    }  # fmt: skip
    tflite = [write_tflite(g) for g in blocks]
    write_c_library(manifest, blocks, path / "c", tflite)
    for g, data in zip(blocks, tflite, strict=True):
        (path / f"{g.name}.tflite").write_bytes(data)
    return ExportBundle(path, manifest, blocks, tflite)


def random_images(bundle: ExportBundle, n: int, seed: int) -> np.ndarray:
    _, h, w, c = bundle.graphs[0].tensors["features_in"].shape
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, c), dtype=np.uint8)
