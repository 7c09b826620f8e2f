"""Block-wise forward-only training: isolation, divergence, reproducibility, resume."""

import json

import pytest
import torch

from ctxconv.train.checkpoint import (
    CheckpointError,
    load_checkpoint,
    restore_model,
    save_checkpoint,
)
from ctxconv.train.config import TrainAppConfig
from ctxconv.train.data import DataConfig, load_datasets
from ctxconv.train.data_gen import DataGenConfig
from ctxconv.train.model import ModelConfig, build_model
from ctxconv.train.objectives import block_loss
from ctxconv.train.run import train_run
from ctxconv.train.trainer import BlockwiseTrainer, TrainerConfig, TrainingDivergedError


def small_app(**trainer_kw) -> TrainAppConfig:
    cfg = TrainAppConfig()
    cfg.data = DataGenConfig(dataset="digits", batch_size=64, max_train_samples=300)
    cfg.model = ModelConfig(blocks=[[1, 8, 3], [2, 12, 3]])
    cfg.trainer = TrainerConfig(**{"epochs": 2, "lr": 5e-3, "progress": False, **trainer_kw})
    return cfg


@pytest.fixture(scope="module")
def digits():
    return load_datasets(DataConfig(dataset="digits", max_train_samples=300))


def test_training_block_i_leaves_earlier_blocks_untouched(digits, tmp_path):
    train, val, _, info = digits
    torch.manual_seed(0)
    model = build_model(ModelConfig(blocks=[[1, 8, 3], [2, 12, 3]]))
    trainer = BlockwiseTrainer(model, TrainerConfig(epochs=1, progress=False),
                               DataGenConfig(num_classes=10), tmp_path)
    trainer._fit_block(0, train, val, 0, None)
    before = {k: v.clone() for k, v in model.blocks[0].state_dict().items()}
    assert any("running_mean" in k for k in before)  # batch norm: buffers that eval must keep
    modes = []
    model.blocks[0].register_forward_hook(lambda m, *_: modes.append(m.training))
    model.train()  # whatever mode the caller left it in, the frozen block runs in eval
    trainer._fit_block(1, train, val, 0, None)
    assert modes and not any(modes), "block 0 ran in training mode while block 1 trained"
    for k, v in model.blocks[0].state_dict().items():
        assert torch.equal(v, before[k]), f"block 0 {k} changed while training block 1"


def test_no_autograd_graph_through_frozen_blocks(digits, tmp_path):
    train, *_ = digits
    model = build_model(ModelConfig(blocks=[[1, 8, 3], [2, 12, 3]]))
    trainer = BlockwiseTrainer(model, TrainerConfig(), DataGenConfig(num_classes=10), tmp_path)
    x, y = train.tensors[0][:16], train.tensors[1][:16]
    h = trainer._frozen_input(1, x)
    assert not h.requires_grad and h.grad_fn is None
    loss, _ = block_loss(model.blocks[1], h, y, "softmax", DataGenConfig(num_classes=10))
    loss.backward()
    assert all(p.grad is None for p in model.blocks[0].parameters())


@pytest.mark.parametrize(("objective", "epochs", "floor"), [("softmax", 4, 0.8), ("bce", 4, 0.6)])
def test_objectives_learn(objective, epochs, floor, tmp_path):
    cfg = small_app(objective=objective)
    cfg.trainer.epochs = epochs
    summary = train_run(cfg, tmp_path)
    assert summary["test_accuracy"]["onepass"] > floor, summary["test_accuracy"]


def test_nan_loss_names_block_and_epoch(tmp_path):
    cfg = small_app(lr=1e30, optimizer="sgd", momentum=0.0)
    with pytest.raises(TrainingDivergedError, match=r"in block \d+ \(of 2\), epoch \d+.*lower"):
        train_run(cfg, tmp_path)


def test_same_seed_same_weights(tmp_path):
    train_run(small_app(), tmp_path / "a")
    train_run(small_app(), tmp_path / "b")
    a = load_checkpoint(tmp_path / "a" / "checkpoint.pt")["state_dict"]
    b = load_checkpoint(tmp_path / "b" / "checkpoint.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


class Interrupt(Exception):
    pass


def test_interrupted_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    full = train_run(small_app(augment=1), tmp_path / "full")
    calls = {"n": 0}
    original = BlockwiseTrainer._fit_block

    def stop_after_three_epochs(self, *args):
        def on_epoch(row):
            calls["n"] += 1
            if calls["n"] == 3:  # block 1, epoch 0 done
                raise Interrupt

        self.on_epoch = on_epoch
        return original(self, *args)

    monkeypatch.setattr(BlockwiseTrainer, "_fit_block", stop_after_three_epochs)
    with pytest.raises(Interrupt):
        train_run(small_app(augment=1), tmp_path / "cut")
    monkeypatch.undo()
    progress = load_checkpoint(tmp_path / "cut" / "checkpoint.pt")["progress"]
    assert (progress["block"], progress["epoch"]) == (1, 0)
    with pytest.raises(CheckpointError, match="add resume=true to continue it, overwrite=true"):
        train_run(small_app(augment=1), tmp_path / "cut")
    cfg = small_app(augment=1)
    cfg.resume = True
    resumed = train_run(cfg, tmp_path / "cut")
    a = load_checkpoint(tmp_path / "full" / "checkpoint.pt")["state_dict"]
    b = load_checkpoint(tmp_path / "cut" / "checkpoint.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["test_accuracy"] == full["test_accuracy"]
    rows = [json.loads(line) for line in open(tmp_path / "cut" / "metrics.jsonl")]
    assert [(r["block"], r["epoch"]) for r in rows] == [(0, 0), (0, 1), (1, 0), (1, 1)]


def test_resume_without_checkpoint_and_with_other_model(tmp_path):
    cfg = small_app()
    cfg.resume = True
    with pytest.raises(CheckpointError, match="has no checkpoint.pt"):
        train_run(cfg, tmp_path)
    train_run(small_app(), tmp_path)
    other = small_app()
    other.resume = True
    other.model.blocks = [[1, 16, 3]]
    with pytest.raises(CheckpointError, match="the model differs.*blocks"):
        train_run(other, tmp_path)


def test_run_dir_contents(tmp_path):
    summary = train_run(small_app(), tmp_path)
    for name in ("config.yaml", "checkpoint.pt", "metrics.jsonl", "summary.json",
                 "training_curves.png"):
        assert (tmp_path / name).exists(), name
    stored = json.loads((tmp_path / "summary.json").read_text())
    assert stored == summary
    assert {"dataset", "test_accuracy", "params", "train_seconds"} <= set(stored)
    assert set(stored["test_accuracy"]) == {"multipass", "onepass"}
    assert not list(tmp_path.glob(".checkpoint.pt.*"))  # no temporary files left
    payload = load_checkpoint(tmp_path / "checkpoint.pt")
    assert "optimizer" not in payload and payload["dataset"]["name"] == "digits"
    model = restore_model(payload)
    assert model.cfg.image_size == 8


def test_corrupt_and_foreign_checkpoints(tmp_path):
    bad = tmp_path / "checkpoint.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="is damaged: it does not end with a zip directory"):
        load_checkpoint(bad)
    torch.save({"weights": 1}, bad)
    with pytest.raises(CheckpointError, match="not a ctxconv checkpoint"):
        load_checkpoint(bad)
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "missing.pt")
    train_run(small_app(), tmp_path / "run")
    good = tmp_path / "run" / "checkpoint.pt"
    data = good.read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="is damaged: it does not end with a zip directory"):
        load_checkpoint(tmp_path / "trunc.pt")
    payload = load_checkpoint(good)
    payload["model_config"]["blocks"] = [[1, 99, 3], [2, 12, 3]]
    payload.pop("format")
    save_checkpoint(tmp_path / "mismatch.pt", payload)
    with pytest.raises(CheckpointError, match="weights do not match the model config"):
        restore_model(load_checkpoint(tmp_path / "mismatch.pt"))


def test_overwrite_starts_afresh(tmp_path):
    train_run(small_app(), tmp_path)
    cfg = small_app()
    cfg.overwrite = True
    summary = train_run(cfg, tmp_path)
    rows = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 4 and summary["epochs_per_block"] == 2
    cfg.resume = True
    with pytest.raises(ValueError, match="contradict"):
        train_run(cfg, tmp_path)


def test_wandb_only_when_enabled(tmp_path, monkeypatch):
    """Disabled by default (no import); enabled without the package: a clear error."""
    import builtins

    real_import = builtins.__import__

    def no_wandb(name, *args, **kwargs):
        if name == "wandb":
            raise ImportError("No module named 'wandb'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_wandb)
    train_run(small_app(), tmp_path / "off")  # never imports wandb
    cfg = small_app()
    cfg.wandb.enabled = True
    with pytest.raises(RuntimeError, match=r"pip install 'ctxconv\[wandb\]'"):
        train_run(cfg, tmp_path / "on")


def test_objective_per_block_trains_each_block_with_its_own(digits, tmp_path, monkeypatch):
    import ctxconv.train.objectives as objectives

    seen = []
    real = objectives.block_loss

    def recording(block, x, labels, objective, *args, **kw):
        seen.append((id(block), objective))
        return real(block, x, labels, objective, *args, **kw)

    train, val, _, _ = digits
    torch.manual_seed(0)
    model = build_model(ModelConfig(blocks=[[1, 8, 3], [2, 12, 3]], contextual=[True, False],
                                    goodness=["energy", "linear"]))
    monkeypatch.setattr(objectives, "block_loss", recording)
    trainer = BlockwiseTrainer(model, TrainerConfig(epochs=1, progress=False,
                                                    objective=["bce", "softmax"]),
                               DataGenConfig(num_classes=10), tmp_path)
    trainer.fit(train, val)
    ids = [id(b) for b in model.blocks]
    used = {(ids.index(block), objective) for block, objective in seen}
    assert used == {(0, "bce"), (1, "softmax")}


@pytest.mark.parametrize("objective,message", [
    (["bce"], "trainer.objective has 1 entries for 2 blocks"),
    (["bce", "hinge"], "unknown trainer.objective 'hinge'"),
])
def test_objective_per_block_errors_before_training(tmp_path, objective, message):
    model = build_model(ModelConfig(blocks=[[1, 8, 3], [2, 12, 3]]))
    with pytest.raises(ValueError, match=message):
        BlockwiseTrainer(model, TrainerConfig(objective=objective),
                         DataGenConfig(num_classes=10), tmp_path)
