"""A damaged checkpoint, a contradicting summary or an untrained run never exports."""

import io
import json
import shutil
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from ctxconv.export import exporter as exporter_mod
from ctxconv.export.cli import main as export_main
from ctxconv.export.exporter import ExportOptions, export_run
from ctxconv.export.run_check import RunCheckError, accuracy_tolerance
from ctxconv.train.checkpoint import CheckpointIntegrityError


@pytest.fixture()
def run_copy(digits_run, tmp_path) -> Path:
    """A copy of the tiny digits run without its export."""
    dst = tmp_path / "run"
    shutil.copytree(digits_run, dst, ignore=shutil.ignore_patterns("export*"))
    return dst


def regions(data: bytes) -> dict[str, tuple[int, int]]:
    """Byte ranges [start, end) of the parts of a checkpoint file."""
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        infos = z.infolist()

    def body(info):
        name_len, extra_len = struct.unpack_from("<HH", data, info.header_offset + 26)
        start = info.header_offset + 30 + name_len + extra_len
        return start, start + info.compress_size
    pkl = next(i for i in infos if i.filename.endswith("data.pkl"))
    tensors = [body(i) for i in infos if "/data/" in i.filename]
    eocd = data.rfind(b"PK\x05\x06")
    (central,) = struct.unpack_from("<I", data, eocd + 16)  # offset of the central directory
    return {
        "header": (0, body(pkl)[0]),  # the first local header
        "config": body(pkl),  # the pickle: model config, data set, progress, digests
        "tensor data": (tensors[0][0], tensors[-1][1]),
        "central directory": (central, eocd),
        "end record and seal": (eocd, len(data)),
    }


def damaged_copies(data: bytes, per_region: int = 50):
    """(label, bytes): one-byte flips spread over every region, and truncations."""
    rng = np.random.default_rng(0)
    for region, (lo, hi) in regions(data).items():
        size = min(per_region, hi - lo)
        offsets = {lo, hi - 1, *rng.choice(np.arange(lo, hi), size=size, replace=False).tolist()}
        for off in sorted(offsets):
            bad = bytearray(data)
            bad[off] ^= 1 << int(rng.integers(0, 8))
            yield f"flip in {region} at {off}", bytes(bad)
    for cut in sorted({1, 100, len(data) - 1, len(data) - 40,
                       *rng.integers(1, len(data), size=40).tolist()}):  # fmt: skip
        yield f"truncated to {cut}", data[:cut]


def test_every_damaged_checkpoint_is_refused_and_none_exports(run_copy, tmp_path):
    ckpt = run_copy / "checkpoint.pt"
    data = ckpt.read_bytes()
    out = tmp_path / "export"
    cases = list(damaged_copies(data))
    flips = [label for label, _ in cases if label.startswith("flip")]
    assert len(flips) >= 200 and len(cases) - len(flips) >= 30
    assert all(sum(f"in {r} at" in f for f in flips) >= 30 for r in regions(data))
    for label, bad in cases:
        ckpt.write_bytes(bad)
        with pytest.raises(CheckpointIntegrityError) as err:
            export_run(run_copy, out)
        msg = str(err.value)
        assert f"checkpoint {ckpt} is damaged" in msg, label
        assert "restore the run directory from a copy, or re-train it" in msg, label
        assert not out.exists(), label
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no temporary export left
    ckpt.write_bytes(data)  # the intact file still passes the same gate
    exporter_mod.load_checkpoint(ckpt)


def test_cli_names_the_file_without_a_traceback(run_copy, capsys):
    ckpt = run_copy / "checkpoint.pt"
    data = bytearray(ckpt.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the tensor data: torch.load alone would accept it
    ckpt.write_bytes(bytes(data))
    assert export_main([str(run_copy), "--int8"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: checkpoint {ckpt} is damaged: its bytes do not match the "
                          "sha256 recorded when it was written")
    assert "Traceback" not in err and not (run_copy / "export").exists()


def _edit_summary(run_dir: Path, **changes) -> dict:
    path = run_dir / "summary.json"
    summary = {**json.loads(path.read_text()), **changes}
    path.write_text(json.dumps(summary))
    return summary


def test_float_accuracy_cross_checked_against_summary(digits_export):
    check = digits_export["run_check"]
    assert check["checked"] is True
    for pair in check["modes"].values():
        assert abs(pair["measured"] - pair["recorded"]) <= check["tolerance"]
    assert check["tolerance"] == accuracy_tolerance(check["test_images"])


def test_summary_that_contradicts_the_weights_stops_the_export(run_copy, capsys):
    recorded = json.loads((run_copy / "summary.json").read_text())["test_accuracy"]
    _edit_summary(run_copy, test_accuracy={m: a - 0.05 for m, a in recorded.items()})
    with pytest.raises(RunCheckError, match=r"multipass float accuracy measured at export is "
                                            r"\d+\.\d\d% but the run recorded \d+\.\d\d%"):
        export_run(run_copy)
    assert export_main([str(run_copy), "--int8"]) == 2
    err = capsys.readouterr().err
    assert f"{recorded['multipass']:.2%} but the run recorded " in err
    assert f"recorded {recorded['multipass'] - 0.05:.2%}" in err
    assert not (run_copy / "export").exists()


def test_summary_from_another_normalisation_stops_the_export(run_copy):
    _edit_summary(run_copy, normalisation={"mean": [0.5], "std": [0.5]})
    with pytest.raises(RunCheckError, match="the two files come from different runs"):
        export_run(run_copy)


def test_run_at_chance_is_refused_unless_allowed(run_copy, monkeypatch, capsys):
    _edit_summary(run_copy, chance={"chance_accuracy": 0.1, "threshold": 0.17,
                                    "best_val_accuracy": 0.097, "at_chance": True})
    with pytest.raises(RunCheckError, match=r"did not learn: its best validation accuracy 9.70% "
                                            r"is at or below chance level .*--allow-untrained"):
        export_run(run_copy)
    assert export_main([str(run_copy), "--int8"]) == 2
    assert "pass --allow-untrained to export it anyway" in capsys.readouterr().err

    def reached(*args, **kwargs):
        raise RuntimeError("past the gate")

    monkeypatch.setattr(exporter_mod, "calibrate", reached)
    with pytest.raises(RuntimeError, match="past the gate"):
        export_run(run_copy, options=ExportOptions(allow_untrained=True))
