"""trainer.schedule=simultaneous: every block on every batch, no gradient across blocks."""

import json

import pytest
import torch
from omegaconf import OmegaConf

from ctxconv.export.exporter import ExportOptions, export_run
from ctxconv.train.checkpoint import load_checkpoint
from ctxconv.train.config import ConfigValueError, TrainAppConfig, validate_config
from ctxconv.train.data import DataConfig, load_datasets
from ctxconv.train.data_gen import DataGenConfig
from ctxconv.train.model import ModelConfig, build_model
from ctxconv.train.objectives import SimultaneousObjective, block_loss, scores_loss
from ctxconv.train.resume_config import upgrade_stored
from ctxconv.train.run import train_run
from ctxconv.train.trainer import BlockwiseTrainer, TrainerConfig


def small_app(**trainer_kw) -> TrainAppConfig:
    cfg = TrainAppConfig()
    cfg.data = DataGenConfig(dataset="digits", batch_size=64, max_train_samples=400)
    cfg.model = ModelConfig(blocks=[[1, 8, 3], [2, 12, 3]])
    cfg.trainer = TrainerConfig(**{"epochs": 3, "lr": 5e-3, "progress": False,
                                   "schedule": "simultaneous", **trainer_kw})
    return cfg


class Interrupt(Exception):
    pass


def test_each_block_gets_only_its_own_gradient():
    """Block 0's gradient is that of its own loss alone: block 1's loss sends none back."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(blocks=[[1, 4, 3], [2, 6, 3]]))
    model.train()
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    objective = SimultaneousObjective(model, ["softmax", "softmax"], DataGenConfig())
    loss, _ = objective(x, y)
    loss.backward()
    together = [p.grad.clone() for p in model.blocks[0].parameters()]
    model.zero_grad()
    own, _ = block_loss(model.blocks[0], x, y, "softmax", DataGenConfig())
    own.backward()
    for a, p in zip(together, model.blocks[0].parameters(), strict=True):
        assert torch.allclose(a, p.grad, atol=1e-6), "block 1's loss reached block 0"


@pytest.mark.parametrize("objective", ["contrast", "bce"])
def test_scores_loss_equals_block_loss_for_pairs(objective):
    """The pair objectives read off the K scores give block_loss's value (same draws)."""
    torch.manual_seed(0)
    block = build_model(ModelConfig(blocks=[[1, 4, 3]])).blocks[0]
    x, y = torch.randn(6, 1, 8, 8), torch.randint(0, 10, (6,))
    gen = DataGenConfig(negatives=3, num_classes=10)
    torch.manual_seed(1)
    direct, _ = block_loss(block, x, y, objective, gen, threshold=0.5)
    torch.manual_seed(1)
    via_scores, _ = scores_loss(block.goodness.scores(block(x)), y, objective, gen, 0.5)
    assert torch.allclose(direct, via_scores)


def test_simultaneous_learns_and_trains_every_block(tmp_path):
    result = train_run(small_app(), tmp_path / "run")
    assert result["test_accuracy"]["onepass"] > 0.75 and result["schedule"] == "simultaneous"
    rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert [(r["block"], r["epoch"]) for r in rows] == [(1, 0), (1, 1), (1, 2)]
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["progress"]["done"]
    manifest = export_run(tmp_path / "run", tmp_path / "run" / "export",
                          ExportOptions(verify_samples=60))  # a finished run: it exports
    assert manifest["accuracy"]["int8"]["onepass"] > 0.7


def test_one_fit_changes_every_block(tmp_path):
    train, val, _, _ = load_datasets(DataConfig(dataset="digits", max_train_samples=200))
    model = build_model(ModelConfig(blocks=[[1, 4, 3], [2, 6, 3], [2, 8, 3]]))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data_gen = DataGenConfig(batch_size=64, num_classes=10)
    trainer = BlockwiseTrainer(model, small_app(epochs=1).trainer, data_gen, tmp_path)
    trainer.fit(train, val)
    for i in range(3):
        key = f"blocks.{i}.body.conv.conv.weight"
        assert not torch.equal(before[key], model.state_dict()[key]), f"block {i} never trained"


def test_simultaneous_beats_one_sequential_pass(tmp_path):
    """At one epoch, simultaneous training reaches at least the sequential schedule's
    validation accuracy on digits with a third of its steps for two blocks."""
    sim = train_run(small_app(epochs=2), tmp_path / "sim")
    seq = train_run(small_app(epochs=1, schedule="sequential"), tmp_path / "seq")
    assert sim["val_accuracy"]["onepass"] >= seq["val_accuracy"]["onepass"] - 0.05


def test_interrupted_simultaneous_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    full = train_run(small_app(augment=1), tmp_path / "full")
    original = BlockwiseTrainer._fit_whole

    def stop_after_two_epochs(self, *args):
        def on_epoch(row):
            if row["epoch"] == 1:
                raise Interrupt

        self.on_epoch = on_epoch
        return original(self, *args)

    monkeypatch.setattr(BlockwiseTrainer, "_fit_whole", stop_after_two_epochs)
    with pytest.raises(Interrupt):
        train_run(small_app(augment=1), tmp_path / "cut")
    monkeypatch.undo()
    cfg = small_app(augment=1)
    cfg.resume = True
    resumed = train_run(cfg, tmp_path / "cut")
    a = load_checkpoint(tmp_path / "full" / "checkpoint.pt")["state_dict"]
    b = load_checkpoint(tmp_path / "cut" / "checkpoint.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["test_accuracy"] == full["test_accuracy"]


@pytest.mark.parametrize("change, message", [
    ({"method": "backprop"}, "trainer.method=backprop trains end to end"),
    ({"cache_prefix": "on"}, "has none: use cache_prefix=auto"),
    ({"objective": "bce", "label_smoothing": 0.1}, "set trainer.objective=softmax"),
])
def test_contradicting_settings_fail_before_training(change, message):
    with pytest.raises(ConfigValueError, match=message):
        validate_config(small_app(**change))


def test_contextual_model_is_refused():
    cfg = small_app()
    cfg.model.contextual = [True, False]
    with pytest.raises(ConfigValueError, match="model.contextual=\\[True, False\\]"):
        validate_config(cfg)


def test_old_schedule_key_names_the_new_one():
    with pytest.raises(ConfigValueError, match="set trainer.lr_schedule=cosine"):
        validate_config(small_app(schedule="cosine"))


def test_stored_config_of_older_runs_is_upgraded():
    old = OmegaConf.create({"trainer": {"schedule": "constant"}})
    new = upgrade_stored(old)
    assert (new.trainer.lr_schedule, new.trainer.schedule) == ("constant", "sequential")


def test_label_smoothing_changes_the_softmax_loss():
    scores, labels = torch.randn(5, 10), torch.randint(0, 10, (5,))
    plain, _ = scores_loss(scores, labels, "softmax", DataGenConfig())
    smooth, _ = scores_loss(scores, labels, "softmax", DataGenConfig(), label_smoothing=0.2)
    assert not torch.allclose(plain, smooth)
