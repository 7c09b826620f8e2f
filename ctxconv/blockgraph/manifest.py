"""The export manifest (``manifest.json``): format tag, field names and types, loader.

``ctxconv-export`` writes it (``io_records`` for the block inputs/outputs,
``validate_manifest`` before the file is written); the simulator reads it with
``read_manifest``. Every field is covered by a sha256 of its canonical JSON, stored in
the manifest's ``digests`` (``seal_manifest`` at export, checked by ``read_manifest``), so an
edited normalisation, class count or quantization parameter is refused by name instead of
silently changing results. Checking the files it lists against their sha256 and parsing
them is the reader's business.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

from ctxconv.blockgraph.ir import BlockGraph, ModelFileError

MANIFEST_NAME = "manifest.json"
FORMAT = "ctxconv-export-v2"
#: Earlier formats: readable structure, but without ``digests`` (refused: re-export).
UNSIGNED_FORMATS = ("ctxconv-export-v1",)
#: The field holding the per-field sha256; it and ``export_dir`` are not themselves signed.
DIGESTS = "digests"
UNSIGNED = (DIGESTS, "export_dir")
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
    check_digests(manifest, path)
    return manifest


def _canonical_sha256(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def field_digests(manifest: dict[str, Any]) -> dict[str, str]:
    """sha256 of the canonical JSON of every field: per key of a mapping (``input.mean``),
    per entry of ``blocks`` (``blocks[0]``), the key list of each mapping, and every other
    top-level value."""
    manifest = json.loads(json.dumps(manifest, allow_nan=False))  # as read back from disk
    out = {}
    for key, value in manifest.items():
        if key in UNSIGNED:
            continue
        if isinstance(value, dict):
            out[key] = _canonical_sha256(sorted(value))
            out.update({f"{key}.{sub}": _canonical_sha256(v) for sub, v in value.items()})
        elif key == "blocks" and isinstance(value, list):
            out[key] = _canonical_sha256(len(value))
            out.update({f"{key}[{i}]": _canonical_sha256(b) for i, b in enumerate(value)})
        else:
            out[key] = _canonical_sha256(value)
    return dict(sorted(out.items()))


def seal_manifest(manifest: dict[str, Any]) -> dict[str, Any]:
    """Store ``field_digests`` in ``manifest`` (in place, and returned): the last step
    before it is written."""
    manifest.pop(DIGESTS, None)
    manifest[DIGESTS] = field_digests(manifest)
    return manifest


def check_digests(manifest: dict[str, Any], path: Path | str = MANIFEST_NAME) -> None:
    """Raise ModelFileError naming the first field whose content is not what was exported."""
    stored = manifest.get(DIGESTS)
    if not isinstance(stored, dict):
        raise ModelFileError(f"{path}: no {DIGESTS!r} field, so its content cannot be checked: "
                             "re-export")
    got = field_digests(manifest)
    for name in sorted(set(stored) | set(got)):
        if name not in got:
            change = "was removed"
        elif name not in stored:
            change = "was added"
        elif stored[name] != got[name]:
            change = "was changed"
        else:
            continue
        raise ModelFileError(f"{path}: field {name!r} {change} after export (it does not match "
                             "the manifest's digests); re-export")


def _non_finite(value: Any, where: str) -> str | None:
    """The path of the first NaN or infinity in ``value`` (None: there is none)."""
    if isinstance(value, float) and not math.isfinite(value):
        return where
    items = (value.items() if isinstance(value, dict)
             else enumerate(value) if isinstance(value, list) else ())
    for key, v in items:
        sub = f"{where}[{key}]" if isinstance(key, int) else f"{where}.{key}" if where else key
        found = _non_finite(v, sub)
        if found:
            return found
    return None


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
    if manifest["format"] in UNSIGNED_FORMATS:
        raise ModelFileError(f"{path}: format {manifest['format']!r} was written by an older "
                             "ctxconv-export, without the digests that protect its content: "
                             "re-export")
    if manifest["format"] != FORMAT:
        raise ModelFileError(f"{path}: format {manifest['format']!r}, expected {FORMAT!r}")
    _validate_fields(manifest, path)
    bad = _non_finite(manifest, "")
    if bad:
        raise ModelFileError(f"{path}: field {bad!r} is NaN or infinite; the manifest was "
                             "edited or damaged: re-export")


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
