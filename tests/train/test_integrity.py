"""Checkpoint digests: the file seal, the content digests, older files, a run at chance."""

import logging
import struct

import pytest
import torch

from ctxconv.train.chance import chance_verdict
from ctxconv.train.checkpoint import (
    UNSEALED_FORMAT,
    CheckpointIntegrityError,
    load_checkpoint,
    restore_model,
    save_checkpoint,
)
from ctxconv.train.config import TrainAppConfig
from ctxconv.train.data_gen import DataGenConfig
from ctxconv.train.integrity import SealError, check_seal, digest, seal
from ctxconv.train.model import ModelConfig, build_model
from ctxconv.train.run import train_run
from ctxconv.train.trainer import TrainerConfig


def tiny_payload() -> dict:
    torch.manual_seed(0)
    model = build_model(ModelConfig(blocks=[[1, 4, 3], [2, 4, 3]], image_size=8))
    return {
        "model_config": {**model.cfg.__dict__},
        "state_dict": model.state_dict(),
        "dataset": {"name": "digits", "mean": [0.25], "std": [0.3]},
        "progress": {"block": 1, "epoch": 0, "done": True},
    }


def unsealed(data: bytes) -> bytes:
    """The same archive with its seal (zip comment) removed."""
    at = data.rfind(b"PK\x05\x06")
    return data[: at + 20] + struct.pack("<H", 0)


def test_digest_is_canonical_and_sensitive():
    a = {"w": torch.arange(6.0).view(2, 3), "cfg": {"blocks": [[1, 4, 3]], "lr": 0.1}}
    b = {"cfg": {"lr": 0.1, "blocks": [[1, 4, 3]]}, "w": torch.arange(6.0).view(2, 3)}
    assert digest(a) == digest(b)  # key order does not matter
    for changed in (
        {**a, "w": torch.arange(6.0).view(3, 2)},  # shape
        {**a, "w": torch.arange(6, dtype=torch.float64).view(2, 3)},  # dtype
        {**a, "cfg": {"blocks": [[1, 4, 3]], "lr": 0.1000001}},  # a value
        {**a, "cfg": {"blocks": [(1, 4, 3)], "lr": 0.1}},  # list vs tuple
    ):
        assert digest(changed) != digest(a)


def test_seal_round_trip_and_errors():
    import io

    buf = io.BytesIO()
    torch.save({"x": torch.ones(3)}, buf)
    sealed = seal(buf.getvalue())
    assert check_seal(sealed) is True
    assert check_seal(buf.getvalue()) is False  # no seal: an older file
    assert torch.load(io.BytesIO(sealed), weights_only=True)["x"].sum() == 3  # torch reads it
    flipped = bytearray(sealed)
    flipped[10] ^= 1
    with pytest.raises(SealError, match="do not match the sha256 recorded"):
        check_seal(bytes(flipped))
    with pytest.raises(SealError, match="length does not match its zip directory"):
        check_seal(sealed[:-5])
    with pytest.raises(SealError, match="does not end with a zip directory"):
        check_seal(b"garbage")


def test_saved_checkpoint_loads_and_carries_digests(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, tiny_payload())
    payload = load_checkpoint(path)
    assert set(payload["integrity"]) == {"state_dict", "model_config", "metadata"}
    assert restore_model(payload, path).cfg.image_size == 8
    save_checkpoint(path, payload)  # re-saving a loaded payload (as training does) works
    assert load_checkpoint(path)["integrity"] == payload["integrity"]


@pytest.mark.parametrize(
    ("edit", "part"),
    [
        (lambda p: next(iter(p["state_dict"].values())).view(-1).add_(1e-3), "its tensor payload"),
        (lambda p: p["model_config"].__setitem__("blocks", [[1, 4, 3], [2, 5, 3]]),
         "its model config"),
        (lambda p: p["dataset"].__setitem__("std", [0.31]), "its metadata"),
    ],
)
def test_content_changed_by_another_tool_is_refused(tmp_path, edit, part):
    """A payload edited and re-saved with plain torch.save (no seal) fails its digests."""
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, tiny_payload())
    payload = load_checkpoint(path)
    edit(payload)
    torch.save(payload, path)
    with pytest.raises(CheckpointIntegrityError, match=f"does not match {part}") as err:
        load_checkpoint(path)
    assert str(path) in str(err.value) and "restore the run directory" in str(err.value)


def test_unsealed_but_intact_loads_with_a_warning(tmp_path, caplog):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, tiny_payload())
    path.write_bytes(unsealed(path.read_bytes()))
    with caplog.at_level(logging.WARNING):
        load_checkpoint(path)
    assert "re-saved without its file seal; its content digests match" in caplog.text


def test_tensor_flips_without_seal_are_caught_by_the_content_digest(tmp_path):
    """The second layer alone: every flip inside the tensor records of an unsealed file."""
    import zipfile

    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, tiny_payload())
    data = unsealed(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        records = [i for i in z.infolist() if "/data/" in i.filename]
    for info in records:
        name_len, extra_len = struct.unpack_from("<HH", data, info.header_offset + 26)
        start = info.header_offset + 30 + name_len + extra_len  # past the local header
        for off in sorted({start, start + info.file_size // 2, start + info.file_size - 1}):
            bad = bytearray(data)
            bad[off] ^= 0x10
            path.write_bytes(bytes(bad))
            with pytest.raises(CheckpointIntegrityError, match="does not match its tensor payload"):
                load_checkpoint(path)


def test_older_checkpoint_without_digest_loads_with_a_warning(tmp_path, caplog):
    path = tmp_path / "checkpoint.pt"
    torch.save({"format": UNSEALED_FORMAT, **tiny_payload()}, path)
    with caplog.at_level(logging.WARNING):
        payload = load_checkpoint(path)
    assert "carries no digest (written by an older ctxconv)" in caplog.text
    assert restore_model(payload, path).cfg.blocks == [[1, 4, 3], [2, 4, 3]]


def test_chance_verdict():
    labels = torch.arange(10).repeat(20)  # 200 labels, balanced: chance 10 %
    at = chance_verdict({"multipass": 0.12, "onepass": 0.09}, labels, 10)
    assert at["chance_accuracy"] == 0.1 and at["at_chance"] is True
    assert at["threshold"] == pytest.approx(0.1 + 3 * (0.1 * 0.9 / 200) ** 0.5, abs=1e-6)
    assert chance_verdict({"multipass": 0.5}, labels, 10)["at_chance"] is False
    skewed = torch.cat([torch.zeros(150, dtype=torch.long), torch.arange(1, 10).repeat(5)])
    assert chance_verdict({"m": 0.8}, skewed, 10)["chance_accuracy"] == pytest.approx(150 / 195)
    assert chance_verdict({"m": 0.8}, skewed, 10)["at_chance"] is True  # majority class = 77 %
    assert chance_verdict({"m": 0.5}, torch.zeros(0, dtype=torch.long), 10)["at_chance"] is None


def test_run_that_did_not_learn_says_so(tmp_path, caplog):
    cfg = TrainAppConfig()
    cfg.data = DataGenConfig(dataset="digits", max_train_samples=300)
    cfg.model = ModelConfig(blocks=[[1, 4, 3], [2, 4, 3]])
    cfg.trainer = TrainerConfig(epochs=1, lr=1e12, progress=False)
    with caplog.at_level(logging.WARNING):
        summary = train_run(cfg, tmp_path)
    assert summary["chance"]["at_chance"] is True
    assert "the run did not learn" in caplog.text and "--allow-untrained" in caplog.text
