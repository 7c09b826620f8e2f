"""The manifest schema: what the exporter writes passes, damaged fields are named."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from graph_factory import tiny_block_graph

from ctxconv.blockgraph.ir import ModelFileError
from ctxconv.blockgraph.manifest import (
    FORMAT,
    MANIFEST_NAME,
    io_records,
    read_manifest,
    seal_manifest,
    validate_manifest,
)


def _manifest() -> dict:
    graph = tiny_block_graph(0, contextual_add=True)
    rename = {"input": "features_in", "logits": "scores"}
    ins = io_records(graph, graph.inputs)
    outs = io_records(graph, graph.outputs)
    for rec in ins + outs:
        rec["name"] = rename.get(rec["name"], rec["name"])
    outs.append({**outs[0], "name": "features"})
    return {
        "format": FORMAT, "int8": True,
        "dataset": {"name": "digits", "num_classes": 10},
        "input": {"pixel_scale": 1 / 16, "mean": [0.5], "std": [0.25]},
        "modes": ["multipass", "onepass"],
        "blocks": [{"name": "block0", "contextual": True, "score_block": True,
                    "files": {"tflite": "block0.tflite"}, "inputs": ins, "outputs": outs,
                    "macs": 1000}],
        "files": {"block0.tflite": "0" * 64},
    }  # fmt: skip


def test_io_records_carry_quantization():
    graph = tiny_block_graph(0, contextual_add=True)
    rec = io_records(graph, graph.inputs)[0]
    t = graph.tensors[graph.inputs[0]]
    assert rec == {"name": t.name, "shape": list(t.shape), "dtype": "int8", "layout": "NHWC",
                   "scale": float(t.quant.scale[0]), "zero_point": int(t.quant.zero_point[0])}


def test_valid_manifest_round_trips(tmp_path: Path):
    manifest = _manifest()
    validate_manifest(manifest)
    seal_manifest(manifest)
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(manifest))
    assert read_manifest(tmp_path) == manifest


def _set(path: str, value):
    def edit(m: dict) -> None:
        *parents, last = path.split(".")
        for p in parents:
            m = m[int(p)] if isinstance(m, list) else m[p]
        if value is KeyError:
            del m[last]
        else:
            m[last] = value
    return edit


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_set("format", "ctxconv-export-v0"), "format 'ctxconv-export-v0', expected"),
        (_set("format", "ctxconv-export-v1"), "written by an older ctxconv-export.*re-export"),
        (_set("input.mean", [float("nan")]), r"field 'input.mean\[0\]' is NaN or infinite"),
        (_set("accuracy", {"int8": float("inf")}), "field 'accuracy.int8' is NaN or infinite"),
        (_set("blocks", KeyError), r"lacks \['blocks'\]"),
        (_set("files", []), "'files' must map names to sha256"),
        (_set("int8", 1), "field 'int8'"),
        (_set("dataset.num_classes", 1), "field 'dataset.num_classes'"),
        (_set("input.std", ["x"]), "field 'input.std'"),
        (_set("modes", ["twopass"]), "field 'modes'"),
        (_set("blocks", []), "field 'blocks'"),
        (_set("blocks.0.macs", 1.5), r"field 'blocks\[0\].macs'"),
        (_set("blocks.0.contextual", False), r"field \"blocks\[0\] tensor names"),
        (_set("blocks.0.inputs.0.scale", "big"), r"field 'blocks\[0\].inputs\[0\].scale'"),
    ],
)
def test_damaged_fields_are_named(edit, message: str):
    manifest = copy.deepcopy(_manifest())
    edit(manifest)
    with pytest.raises(ModelFileError, match=message):
        validate_manifest(manifest, "export/manifest.json")


def test_read_manifest_errors(tmp_path: Path):
    with pytest.raises(ModelFileError, match="does not exist"):
        read_manifest(tmp_path / "missing")
    with pytest.raises(ModelFileError, match="has no manifest.json"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text("[1, 2]")
    with pytest.raises(ModelFileError, match="expected a JSON object"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text("{")
    with pytest.raises(ModelFileError, match="not valid JSON"):
        read_manifest(tmp_path)
