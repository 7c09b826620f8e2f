"""The committed checkpoint exports to the same bytes it did when its digests were taken.

`tests/data/golden_run` is a tiny digits run (checkpoint, config, summary) and
`export_sha256.json` the sha256 of every `.tflite`, `.onnx` and test-vector file its int8
export wrote. Moving code between modules must not change one byte of them.
"""

import hashlib
import json
import shutil
from pathlib import Path

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden_run"


def test_committed_checkpoint_exports_byte_identical(tmp_path):
    from ctxconv.export.exporter import ExportOptions, export_run

    run = tmp_path / "run"
    shutil.copytree(GOLDEN, run)
    out = tmp_path / "export"
    export_run(run, out, ExportOptions())
    expected = json.loads((GOLDEN / "export_sha256.json").read_text())
    got = {name: hashlib.sha256((out / name).read_bytes()).hexdigest() for name in expected}
    assert got == expected
    written = {p.name for p in out.iterdir() if p.suffix in (".tflite", ".onnx", ".npz")}
    assert written == set(expected)
