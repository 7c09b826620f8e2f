"""An export directory as the firmware sees it: manifest, block files, test vectors.

Everything is checked before use: the manifest's format and fields
(``ctxconv.blockgraph.manifest``), every file's sha256 against the manifest, and each
``.tflite`` parsed by the block-graph reader (``ctxconv.blockgraph.tflite.reader``).
A malformed or hand-edited export raises ``ModelFileError`` naming the file and the
problem; nothing here can crash the process.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ctxconv.blockgraph.ir import BlockGraph, ModelFileError
from ctxconv.blockgraph.manifest import MANIFEST_NAME, read_manifest, sha256
from ctxconv.blockgraph.tflite.reader import read_tflite


@dataclass
class ExportBundle:
    """A verified export: manifest, parsed block graphs and raw .tflite bytes."""

    path: Path
    manifest: dict[str, Any]
    graphs: list[BlockGraph]
    tflite: list[bytes]

    @property
    def num_classes(self) -> int:
        return int(self.manifest["dataset"]["num_classes"])

    @property
    def blocks(self) -> list[dict[str, Any]]:
        return self.manifest["blocks"]

    def file(self, index: int, fmt: str) -> Path:
        name = self.blocks[index]["files"].get(fmt)
        if name is None:
            raise ModelFileError(f"{self.path}: block {index} was not exported as {fmt}; "
                                 f"re-export with --format onnx,tflite")
        return self.path / name

    def test_vectors(self, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Raw test images (N, H, W, C) uint8 and labels (N,)."""
        return self._vectors("test_vectors", limit)

    def train_vectors(self, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Raw training images with labels (the calibration set) for on-device training."""
        if "train_vectors" not in self.manifest:
            raise ModelFileError(f"{self.path} carries no training vectors: re-export with "
                                 "this version of ctxconv-export")
        return self._vectors("train_vectors", limit)

    def _vectors(self, key: str, limit: int | None) -> tuple[np.ndarray, np.ndarray]:
        info = self.manifest.get(key) or {}
        path = self.path / info.get("file", f"{key}.npz")
        try:
            with np.load(path) as data:
                images, labels = data["images"], data["labels"]
        except (OSError, KeyError, ValueError) as exc:
            raise ModelFileError(f"cannot read test vectors {path}: {exc}") from exc
        if limit is not None:
            images, labels = images[:limit], labels[:limit]
        return images, labels


def _check_files(export_dir: Path, manifest: dict[str, Any]) -> None:
    files = manifest["files"]
    if not isinstance(files, dict):
        raise ModelFileError(f"{export_dir / MANIFEST_NAME}: 'files' must map names to sha256")
    for name, digest in files.items():
        path = export_dir / str(name)
        if Path(str(name)).is_absolute() or ".." in Path(str(name)).parts:
            raise ModelFileError(f"manifest names a file outside the export directory: {name!r}")
        if not path.is_file():
            raise ModelFileError(f"{path} is listed in the manifest but missing")
        if sha256(path) != digest:
            raise ModelFileError(f"{path} does not match its sha256 in the manifest: the file "
                                 "was modified or corrupted after export; re-export")


def load_export(export_dir: str | Path, verify: bool = True) -> ExportBundle:
    """Read and check an export directory; ModelFileError says what is wrong."""
    export_dir = Path(export_dir)
    manifest = read_manifest(export_dir)
    if verify:
        _check_files(export_dir, manifest)
    graphs, blobs = [], []
    for i, block in enumerate(manifest["blocks"]):
        try:
            name = block["files"]["tflite"]
        except (KeyError, TypeError) as exc:
            raise ModelFileError(f"manifest block {i} has no .tflite file: the simulator runs "
                                 "TFLite models; re-export with --format onnx,tflite") from exc
        if verify and name not in manifest["files"]:
            raise ModelFileError(f"{name} is not covered by the manifest's sha256 list")
        path = export_dir / name
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ModelFileError(f"cannot read {path}: {exc}") from exc
        graph = read_tflite(data, name=str(path))
        _check_io(graph, block, path)
        graphs.append(graph)
        blobs.append(data)
    return ExportBundle(export_dir, manifest, graphs, blobs)


def _check_io(graph: BlockGraph, block: dict[str, Any], path: Path) -> None:
    """The file's inputs/outputs must be the ones the manifest promises."""
    try:
        want_in = [t["name"] for t in block["inputs"]]
        want_out = [t["name"] for t in block["outputs"]]
    except (KeyError, TypeError) as exc:
        raise ModelFileError(f"manifest entry for {path.name} lacks inputs/outputs") from exc
    if graph.inputs != want_in or graph.outputs != want_out:
        raise ModelFileError(f"{path}: inputs {graph.inputs} / outputs {graph.outputs} differ "
                             f"from the manifest ({want_in} / {want_out})")
    for rec in block["inputs"] + block["outputs"]:
        t = graph.tensors[rec["name"]]
        if list(t.shape) != list(rec["shape"]):
            raise ModelFileError(f"{path}: tensor {rec['name']!r} has shape {list(t.shape)}, "
                                 f"manifest says {rec['shape']}")
        if t.quant is not None and "scale" in rec and (
            abs(float(t.quant.scale[0]) - float(rec["scale"])) > 1e-6 * abs(float(rec["scale"]))
            or int(t.quant.zero_point[0]) != int(rec["zero_point"])
        ):
            raise ModelFileError(f"{path}: quantization of {rec['name']!r} differs from the "
                                 "manifest")
