"""The export manifest (``manifest.json``): format tag, field names and types, loader.

``ctxconv-export`` writes it (``io_records`` for the block inputs/outputs,
``validate_manifest`` before the file is written); the simulator reads it with
``read_manifest``. Only the manifest's structure lives here: checking the files it lists
against their sha256 and parsing them is the reader's business.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ctxconv.blockgraph.ir import BlockGraph, ModelFileError

MANIFEST_NAME = "manifest.json"
FORMAT = "ctxconv-export-v1"
#: Inference modes an export may offer.
MODES = ("multipass", "onepass")
#: Top-level fields every manifest has.
REQUIRED = ("format", "int8", "dataset", "input", "modes", "blocks", "files")
#: Fields (and their JSON types) of every ``blocks[i]`` entry.
BLOCK_FIELDS: tuple[tuple[str, type], ...] = (
    ("name", str), ("contextual", bool), ("score_block", bool), ("files", dict),
    ("inputs", list), ("outputs", list), ("macs", int),
)  # fmt: skip
#: Tensor names of every block's inputs and outputs (plus ``context`` when contextual).
BLOCK_TENSORS = ("features_in", "features", "scores")
#: An energy-goodness block outputs ``goodness`` (one value per pass) instead of ``scores``.
GOODNESS_TENSOR = "goodness"
CONTEXT_TENSOR = "context"
#: The generated C library's folder inside an export directory.
C_DIR = "c"


def sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_digests(directory: Path) -> dict[str, str]:
    """sha256 of every file under ``directory``, by path relative to it (posix)."""
    return {p.relative_to(directory).as_posix(): sha256(p)
            for p in sorted(directory.rglob("*")) if p.is_file()}


def first_contextual(blocks: list[dict[str, Any]]) -> int | None:
    """Index of the first block that takes the context (None: no block does).

    From it on every block's input depends on the context, so multipass runs every later
    block once per candidate on that candidate's features; the blocks before it run once.
    """
    return next((i for i, b in enumerate(blocks) if b["contextual"]), None)


def io_records(graph: BlockGraph, names: list[str]) -> list[dict[str, Any]]:
    """Manifest records of a block's inputs or outputs: name, shape, dtype, layout, quant."""
    out = []
    for name in names:
        t = graph.tensors[name]
        rec: dict[str, Any] = {"name": name, "shape": list(t.shape), "dtype": t.dtype,
                               "layout": "NHWC" if len(t.shape) == 4 else "NC"}
        if t.quant is not None:
            rec.update(scale=float(t.quant.scale[0]), zero_point=int(t.quant.zero_point[0]))
        out.append(rec)
    return out


def read_manifest(export_dir: Path) -> dict[str, Any]:
    """The validated manifest of ``export_dir``; ModelFileError says what is wrong."""
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
    validate_manifest(manifest, path)
    return manifest


def validate_manifest(manifest: Any, path: Path | str = MANIFEST_NAME) -> None:
    """Raise ModelFileError unless ``manifest`` has the format and every field (with the
    right type) that a reader of the export relies on."""
    if not isinstance(manifest, dict):
        raise ModelFileError(f"{path}: expected a JSON object")
    if not isinstance(manifest.get("files", {}), dict):
        raise ModelFileError(f"{path}: 'files' must map names to sha256")
    missing = [k for k in REQUIRED if k not in manifest]
    if missing:
        raise ModelFileError(f"{path} lacks {missing}: not a ctxconv export manifest")
    if manifest["format"] != FORMAT:
        raise ModelFileError(f"{path}: format {manifest['format']!r}, expected {FORMAT!r}")
    _validate_fields(manifest, path)


class _Malformed(TypeError):
    """A field of the wrong type or value; ``args[0]`` names it."""


def _expect(value: Any, kind: type | tuple[type, ...], where: str) -> Any:
    if isinstance(value, bool) and kind in (int, float, (int, float)):
        raise _Malformed(where)
    if not isinstance(value, kind):
        raise _Malformed(where)
    return value


def _validate_fields(manifest: dict[str, Any], path: Path | str) -> None:
    where = "manifest"
    num = (int, float)
    try:
        where = "int8"
        _expect(manifest["int8"], bool, where)
        where = "dataset.num_classes"
        if _expect(manifest["dataset"]["num_classes"], int, where) < 2:
            raise _Malformed(where)
        for key in ("pixel_scale", "mean", "std"):
            where = f"input.{key}"
            value = manifest["input"][key]
            for v in value if isinstance(value, list) else [value]:
                _expect(v, num, where)
        where = "modes"
        modes = _expect(manifest["modes"], list, where)
        if not modes or any(m not in MODES for m in modes):
            raise _Malformed(where)
        where = "blocks"
        blocks = _expect(manifest["blocks"], list, where)
        if not blocks:
            raise _Malformed(where)
        for i, block in enumerate(blocks):
            for key, kind in BLOCK_FIELDS:
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
            wanted = set(BLOCK_TENSORS) | ({CONTEXT_TENSOR} if block["contextual"] else set())
            energy = (wanted - {"scores"}) | {GOODNESS_TENSOR}
            if names not in (wanted, energy):
                where = f"blocks[{i}] tensor names {sorted(names)}"
                raise _Malformed(where)
    except (KeyError, TypeError, IndexError) as exc:
        where = exc.args[0] if isinstance(exc, _Malformed) else where
        raise ModelFileError(f"{path}: field {where!r} is missing or malformed; the manifest "
                             "was edited or damaged: re-export") from exc
