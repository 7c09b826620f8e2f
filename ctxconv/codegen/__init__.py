"""The C writer: an int8 export as a self-contained C99 library for a firmware project.

Written from the same int8 block graphs as the ONNX and TFLite files (so it carries the
same quantization parameters): weights, biases and requantization constants as ``const``
arrays (flash), the project's own int8 kernels (bit-exact with TFLM's reference kernels),
one static arena laid out at generation time, no ``malloc`` and no floating point at run
time. ``write_c_library`` is called by ``ctxconv-export --format c`` and can regenerate the
sources of an existing export directory from its ``.tflite`` files.
"""

from __future__ import annotations

import json
import os
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ctxconv.blockgraph.ir import BlockGraph, ModelFileError
from ctxconv.blockgraph.manifest import C_DIR, MANIFEST_NAME, read_manifest, validate_manifest
from ctxconv.blockgraph.tflite.reader import read_tflite
from ctxconv.blockgraph.tflite.writer import write_tflite
from ctxconv.codegen.header import header, model_digest
from ctxconv.codegen.package import package_files
from ctxconv.codegen.readme import readme
from ctxconv.codegen.sources import CGenerationError, source
from ctxconv.codegen.training import training_record
from ctxconv.memory.c_arena import ArenaLayout, plan_arena
from ctxconv.workdirs import make_work_dir, sweep_stale

__all__ = ["C_DIR", "KERNEL_FILES", "TRAIN_FILES", "CGenerationError", "c_record",
           "copy_runtime", "write_c_for_export", "write_c_library"]

KERNEL_FILES = ("ctxconv_kernels.h", "ctxconv_kernels.c")
#: On-device training: the runtime that trains a block through its generated descriptor.
TRAIN_FILES = ("ctxconv_train.h", "ctxconv_train.c")


def c_record(layout: ArenaLayout, manifest: dict[str, Any] | None = None,
             graphs: list[BlockGraph] | None = None) -> dict[str, Any]:
    """The manifest's ``c`` entry: the folder, the arena laid out in it and what the library
    can train."""
    rec: dict[str, Any] = {"dir": C_DIR, "arena_bytes": layout.size, "arena": layout.table()}
    if manifest is not None and graphs is not None:
        rec["training"] = training_record(manifest, graphs)
    return rec


def _check_pipeline(manifest: dict[str, Any], graphs: list[BlockGraph]) -> None:
    blocks = manifest["blocks"]
    if len(blocks) != len(graphs) or not graphs:
        raise CGenerationError(f"{len(graphs)} block graphs for {len(blocks)} manifest blocks")
    if not manifest.get("int8"):
        raise CGenerationError("the C writer needs a full-integer int8 export (--int8)")
    for i, (b, g) in enumerate(zip(blocks, graphs, strict=True)):
        allowed = ["features_in", "context"] if b["contextual"] else ["features_in"]
        if g.inputs[0] != "features_in" or any(n not in allowed for n in g.inputs):
            raise CGenerationError(f"{g.name} takes inputs {g.inputs}; a block takes "
                                   f"{' and '.join(allowed)}")
        if "features" not in g.outputs:
            raise CGenerationError(f"{g.name} has no 'features' output")
        if not {"scores", "goodness"} & set(g.outputs):
            raise CGenerationError(f"{g.name} has no 'scores' or 'goodness' output")
        if i and g.tensors["features_in"].shape != graphs[i - 1].tensors["features"].shape:
            raise CGenerationError(f"{g.name}'s input does not match {graphs[i - 1].name}'s "
                                   "features")

def copy_runtime(names: tuple[str, ...], out_dir: Path) -> list[Path]:
    """Copy the hand-written C files ``names`` of ``codegen/runtime`` into ``out_dir``."""
    runtime = resources.files("ctxconv.codegen") / "runtime"
    written = []
    for name in names:
        with resources.as_file(runtime / name) as src:
            shutil.copyfile(src, out_dir / name)
        written.append(out_dir / name)
    return written


def write_c_library(manifest: dict[str, Any], graphs: list[BlockGraph], out_dir: str | Path,
                    tflite: list[bytes] | None = None,
                    sample: tuple[np.ndarray, int] | None = None
                    ) -> tuple[list[Path], ArenaLayout]:
    """Write the library into ``out_dir``; return the files written and the arena layout.

    ``tflite``: the bytes of the blocks' .tflite files, whose sha256 the header names
    (default: ``graphs`` serialised as the exporter writes them). ``sample``: one raw image
    and its label for the example (``example/main.c``; default: a black image). Raises
    ``CGenerationError`` naming the block and op when a graph cannot be expressed.
    """
    _check_pipeline(manifest, graphs)
    layout = plan_arena(graphs)
    code = source(manifest, graphs, layout)  # first: it names what C cannot express
    digest = model_digest(tflite if tflite is not None
                          else [write_tflite(g, g.name) for g in graphs])
    texts = {"ctxconv_model.h": header(manifest, graphs, layout, digest),
             "ctxconv_model.c": code, "README.md": readme(manifest, graphs, layout, digest),
             **package_files(manifest, *(sample or (None, None)))}
    out = Path(out_dir)
    (out / "example").mkdir(parents=True, exist_ok=True)
    written = copy_runtime(KERNEL_FILES + TRAIN_FILES, out)
    for name, text in texts.items():
        (out / name).write_text(text)
        written.append(out / name)
    return written, layout


def example_sample(export_dir: Path, manifest: dict[str, Any]) -> tuple[np.ndarray, int] | None:
    """The example's image: the export's first training (calibration) vector, if it has
    them."""
    path = export_dir / (manifest.get("train_vectors") or {}).get("file", "train_vectors.npz")
    if not path.is_file():
        return None
    with np.load(path) as data:
        return data["images"][0], int(data["labels"][0])


def write_c_for_export(export_dir: str | Path) -> tuple[dict[str, Any], ArenaLayout]:
    """(Re)generate ``EXPORT_DIR/c`` from the export's own ``.tflite`` files.

    The files are checked against the manifest's sha256 first; the new folder and the
    updated manifest replace the old ones only once everything is written.
    """
    from ctxconv.blockgraph.manifest import file_digests, seal_manifest, sha256

    export_dir = Path(export_dir)
    manifest = read_manifest(export_dir)
    graphs, tflite = [], []
    for block in manifest["blocks"]:
        name = block["files"].get("tflite")
        if not name:
            raise ModelFileError(f"{export_dir}: block {block['name']} has no .tflite file; the "
                                 "C library is generated from it (re-export with --format c)")
        path = export_dir / name
        if not path.is_file() or sha256(path) != manifest["files"].get(name):
            raise ModelFileError(f"{path} is missing or does not match its sha256 in the "
                                 "manifest; re-export")
        tflite.append(path.read_bytes())
        graphs.append(read_tflite(tflite[-1], name=str(path)))
    tmp = make_work_dir(f".{C_DIR}.new-", export_dir)
    sweep_stale(export_dir, f".{C_DIR}.old-")
    try:
        _, layout = write_c_library(manifest, graphs, tmp, tflite,
                                    example_sample(export_dir, manifest))
        manifest["c"] = c_record(layout, manifest, graphs)
        files = {k: v for k, v in manifest["files"].items() if not k.startswith(f"{C_DIR}/")}
        files.update({f"{C_DIR}/{k}": v for k, v in file_digests(tmp).items()})
        manifest["files"] = dict(sorted(files.items()))
        manifest.pop("export_dir", None)
        validate_manifest(manifest)
        seal_manifest(manifest)
        new_manifest = tmp / MANIFEST_NAME
        new_manifest.write_text(json.dumps(manifest, indent=2))
        old = export_dir / f".{C_DIR}.old-{os.getpid()}-"
        if (export_dir / C_DIR).exists():
            os.replace(export_dir / C_DIR, old)
        os.replace(new_manifest, export_dir / MANIFEST_NAME)
        os.replace(tmp, export_dir / C_DIR)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest, layout
