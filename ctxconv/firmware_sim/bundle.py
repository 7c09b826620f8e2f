"""An export directory as the firmware sees it: manifest, block files, test vectors.

Everything is checked before use: the manifest's format and fields, every file's
sha256 against the manifest, and each ``.tflite`` parsed by the simulator's own reader.
A malformed or hand-edited export raises ``ModelFileError`` naming the file and the
problem; nothing here can crash the process.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ctxconv.export.files import sha256
from ctxconv.export.ir import BlockGraph, ModelFileError
from ctxconv.firmware_sim.tflite_reader import read_tflite

MANIFEST_NAME = "manifest.json"
EXPORT_FORMAT = "ctxconv-export-v1"
_REQUIRED = ("format", "int8", "dataset", "input", "modes", "blocks", "files")


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


def read_manifest(export_dir: Path) -> dict[str, Any]:
    path = export_dir / MANIFEST_NAME
    if not export_dir.is_dir():
        raise ModelFileError(f"export directory {export_dir} does not exist: run "
                             "ctxconv-export RUN_DIR --int8 first")
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ModelFileError(f"{export_dir} has no {MANIFEST_NAME}: is it an export "
                             "directory written by ctxconv-export?") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path} is not valid JSON ({exc}); re-export") from exc
    if not isinstance(manifest, dict):
        raise ModelFileError(f"{path}: expected a JSON object")
    if not isinstance(manifest.get("files", {}), dict):
        raise ModelFileError(f"{path}: 'files' must map names to sha256")
    missing = [k for k in _REQUIRED if k not in manifest]
    if missing:
        raise ModelFileError(f"{path} lacks {missing}: not a ctxconv export manifest")
    if manifest["format"] != EXPORT_FORMAT:
        raise ModelFileError(f"{path}: format {manifest['format']!r}, expected {EXPORT_FORMAT!r}")
    _validate_fields(manifest, path)
    return manifest


def _expect(value: Any, kind: type | tuple[type, ...], where: str) -> Any:
    if isinstance(value, bool) and kind in (int, float, (int, float)):
        raise TypeError(where)
    if not isinstance(value, kind):
        raise TypeError(where)
    return value


def _validate_fields(manifest: dict[str, Any], path: Path) -> None:
    """Every field the simulator reads exists and has the right type."""
    where = "manifest"
    num = (int, float)
    try:
        where = "int8"
        _expect(manifest["int8"], bool, where)
        where = "dataset.num_classes"
        if _expect(manifest["dataset"]["num_classes"], int, where) < 2:
            raise TypeError(where)
        for key in ("pixel_scale", "mean", "std"):
            where = f"input.{key}"
            value = manifest["input"][key]
            for v in value if isinstance(value, list) else [value]:
                _expect(v, num, where)
        where = "modes"
        modes = _expect(manifest["modes"], list, where)
        if not modes or any(m not in ("multipass", "onepass") for m in modes):
            raise TypeError(where)
        where = "blocks"
        blocks = _expect(manifest["blocks"], list, where)
        if not blocks:
            raise TypeError(where)
        for i, block in enumerate(blocks):
            for key, kind in (("name", str), ("contextual", bool), ("score_block", bool),
                              ("files", dict), ("inputs", list), ("outputs", list),
                              ("macs", int)):
                where = f"blocks[{i}].{key}"
                _expect(block[key], kind, where)
            for io in ("inputs", "outputs"):
                for j, rec in enumerate(block[io]):
                    where = f"blocks[{i}].{io}[{j}]"
                    _expect(rec["name"], str, where + ".name")
                    for d in _expect(rec["shape"], list, where + ".shape"):
                        _expect(d, int, where + ".shape")
                    if manifest["int8"]:
                        _expect(rec["scale"], num, where + ".scale")
                        _expect(rec["zero_point"], int, where + ".zero_point")
            names = {r["name"] for r in block["inputs"]} | {r["name"] for r in block["outputs"]}
            wanted = {"features_in", "features", "scores"} | (
                {"context"} if block["contextual"] else set())
            if names != wanted:
                where = f"blocks[{i}] tensor names {sorted(names)}"
                raise TypeError(where)
    except (KeyError, TypeError, IndexError) as exc:
        raise ModelFileError(f"{path}: field {where!r} is missing or malformed; the manifest "
                             "was edited or damaged: re-export") from exc


def _check_files(export_dir: Path, manifest: dict[str, Any]) -> None:
    files = manifest["files"]
    if not isinstance(files, dict):
        raise ModelFileError(f"{export_dir / MANIFEST_NAME}: 'files' must map names to sha256")
    for name, digest in files.items():
        path = export_dir / str(name)
        if Path(str(name)).name != name:
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
