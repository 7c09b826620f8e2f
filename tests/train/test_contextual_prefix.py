"""Any block may be contextual: pairs run through the frozen prefix under their own context."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from ctxconv.train.checkpoint import load_checkpoint
from ctxconv.train.data_gen import (
    DataGenConfig,
    generate_contextual_data,
    generate_data,
    generate_distinct_wrong_labels,
)
from ctxconv.train.inference import (
    assert_label_free,
    available_modes,
    block_scores,
    multipass_scores,
    predict,
)
from ctxconv.train.model import ModelConfig, build_model
from ctxconv.train.objectives import block_loss
from ctxconv.train.prefix_cache import PrefixCacheError
from ctxconv.train.run import train_run
from ctxconv.train.trainer import BlockwiseTrainer, TrainerConfig, evaluate_upto
from tests.tiny_runs import small_app

K = 10


def _model(contextual, goodness="linear", injection="bias", norm="batch", score_blocks=None):
    torch.manual_seed(3)
    cfg = ModelConfig(blocks=[[1, 6, 3], [2, 8, 3], [1, 8, 3]], contextual=contextual,
                      goodness=goodness, injection=injection, norm=norm, num_classes=K,
                      in_channels=1, image_size=8, score_blocks=score_blocks)
    model = build_model(cfg).eval()
    for p in model.parameters():  # visible context weights (FiLM starts at zero)
        torch.nn.init.normal_(p, std=0.3)
    return model


# --- generate_data with several negatives -------------------------------------------------

def test_one_negative_is_the_seeds_draw():
    x, y = torch.randn(16, 1, 4, 4), torch.randint(0, K, (16,))
    torch.manual_seed(5)
    seed_images, seed_contexts = generate_contextual_data(x, y, K)
    torch.manual_seed(5)
    images, contexts = generate_data((x, y), DataGenConfig(num_classes=K, negatives=1))
    assert torch.equal(images, seed_images) and torch.equal(contexts, seed_contexts)
    assert images.shape == (32, 1, 4, 4)


def test_all_negatives_pair_every_wrong_label_once():
    x, y = torch.randn(12, 1, 4, 4), torch.randint(0, K, (12,))
    images, contexts = generate_data((x, y), DataGenConfig(num_classes=K, negatives=K - 1))
    assert images.shape == (K * 12, 1, 4, 4) and contexts.shape == (K * 12, K)
    assert torch.equal(images.view(K, 12, 1, 4, 4)[3], x)
    labels = contexts.argmax(1).view(K, 12)  # row 0: positives, rows 1..: negatives
    assert torch.equal(labels[0], y)
    for i in range(12):
        assert sorted(labels[:, i].tolist()) == list(range(K))


def test_some_negatives_are_distinct_and_wrong():
    y = torch.randint(0, K, (200,))
    wrong = generate_distinct_wrong_labels(y, K, 3)  # (3, B)
    assert wrong.shape == (3, 200)
    assert not (wrong == y).any()
    assert all(len(set(wrong[:, i].tolist())) == 3 for i in range(200))
    with pytest.raises(ValueError, match=r"negatives must lie in \[1, 9\] for 10 classes, got 10"):
        generate_distinct_wrong_labels(y, K, 10)


# --- objectives through a contextual prefix -----------------------------------------------

def _prefix(model, upto):
    def run(x, contexts):
        with torch.no_grad():
            return model.features_under_contexts(x, upto, contexts)
    return run


def test_contrast_with_one_negative_is_the_symmetric_loss():
    model = _model([True, False, False])
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, K, (8,))
    block = model.blocks[1]
    torch.manual_seed(0)
    loss, _ = block_loss(block, x, y, "contrast", DataGenConfig(num_classes=K),
                         prefix=_prefix(model, 1))
    torch.manual_seed(0)
    images, contexts = generate_data((x, y), DataGenConfig(num_classes=K))
    g = block.goodness(block(model.features(images, 1, contexts), contexts), contexts)
    assert torch.allclose(loss, F.softplus(g[8:] - g[:8]).mean(), atol=1e-6)


def test_softmax_through_the_prefix_equals_contrast_against_every_wrong_label():
    model = _model([True, False, False])
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, K, (8,))
    prefix = _prefix(model, 2)
    softmax, _ = block_loss(model.blocks[2], x, y, "softmax", DataGenConfig(num_classes=K),
                            prefix=prefix)
    contrast, _ = block_loss(model.blocks[2], x, y, "contrast",
                             DataGenConfig(num_classes=K, negatives=K - 1), prefix=prefix)
    assert torch.allclose(softmax, contrast, atol=1e-5)


def test_the_prefix_runs_under_each_pairs_own_context():
    """The trained block's input for a pair is the prefix under that pair's context."""
    model = _model([True, False, False])
    trainer = BlockwiseTrainer(model, TrainerConfig(progress=False), DataGenConfig(num_classes=K),
                               run_dir=".", device=torch.device("cpu"))
    assert trainer._shared(2) == 0 and trainer._frozen_input(2, torch.ones(1)).shape == (1,)
    prefix = trainer._context_prefix(2)
    x = torch.randn(4, 1, 8, 8)
    c0 = torch.eye(K)[[0, 1, 2, 3]]
    c1 = torch.eye(K)[[4, 5, 6, 7]]
    h0, h1 = prefix(x, c0), prefix(x, c1)
    assert torch.allclose(h0, model.blocks[1](model.blocks[0](x, c0)))
    assert not torch.allclose(h0, h1)  # the context reaches the trained block's input
    assert not h0.requires_grad
    free = _model([False, False, True])
    free_trainer = BlockwiseTrainer(free, TrainerConfig(), DataGenConfig(num_classes=K), ".",
                                    device=torch.device("cpu"))
    assert free_trainer._context_prefix(2) is None and free_trainer._shared(2) == 2


# --- shared context-free work ------------------------------------------------------------

def _pair_goodness_repeated(model, b, x, contexts):
    """The reference: every pair's image run through the whole prefix and block."""
    repeats = len(contexts) // len(x)
    h = model.features(x.repeat(repeats, 1, 1, 1), b, contexts)
    block = model.blocks[b]
    return block.goodness(block(h, contexts), contexts)


@pytest.mark.parametrize(("contextual", "injection", "goodness"), [
    ([False, False, True], "bias", "linear"),
    ([False, True, False], "bias+film", "linear"),
    ([True, False, False], "film", "energy"),
    ([True, True, True], "bias", "linear"),
])
@pytest.mark.parametrize("train_mode", [False, True])
def test_pairs_share_the_context_free_work_and_equal_repeated_images(contextual, injection,
                                                                    goodness, train_mode):
    """Goodness, loss and gradients of ``generate_data`` pairs computed with the conv of an
    image once (and a context-free block's scores read off) equal the repeated images run
    one by one, in eval and in train mode (batch statistics of the repeated batch)."""
    data_gen = DataGenConfig(num_classes=K, negatives=4)
    x, y = torch.randn(6, 1, 8, 8), torch.randint(0, K, (6,))
    for b in range(3):
        model = _model(contextual, goodness=goodness, injection=injection).train(train_mode)
        trainer = BlockwiseTrainer(model, TrainerConfig(progress=False), data_gen, run_dir=".",
                                   device=torch.device("cpu"))
        x_in = trainer._frozen_input(b, x)
        model.blocks[b].train(train_mode)
        torch.manual_seed(1)
        loss, _ = block_loss(model.blocks[b], x_in, y, "contrast", data_gen,
                             prefix=trainer._context_prefix(b))
        grads = torch.autograd.grad(loss, list(model.blocks[b].parameters()), allow_unused=True)
        torch.manual_seed(1)
        _, contexts = generate_data((x_in, y), data_gen)
        with torch.no_grad():
            for block in model.blocks[:b]:
                block.eval()
        g = _pair_goodness_repeated(model, b, x, contexts).view(-1, 6).T
        want = F.cross_entropy(g, torch.zeros(6, dtype=torch.long))
        want_grads = torch.autograd.grad(want, list(model.blocks[b].parameters()),
                                         allow_unused=True)
        assert torch.allclose(loss, want, atol=1e-5), (b, float(loss), float(want))
        for got, ref in zip(grads, want_grads, strict=True):
            assert (got is None) == (ref is None)
            if got is not None:
                assert torch.allclose(got, ref, atol=1e-4, rtol=1e-4), b


def test_a_contextual_conv_of_the_image_runs_once_per_batch():
    """The conv of a contextual block sees B images, not (1 + n) B, and still every context."""
    model = _model([False, False, True])
    block = model.blocks[2]
    seen = []
    block.body.conv.conv.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    x, y = torch.randn(5, 8, 4, 4), torch.randint(0, K, (5,))
    block_loss(block, x, y, "contrast", DataGenConfig(num_classes=K, negatives=9))
    scores = block_scores(model, torch.randn(5, 1, 8, 8))
    assert seen == [5, 5] and scores[2].shape == (5, K)


# --- inference -------------------------------------------------------------------------------

@pytest.mark.parametrize(("contextual", "goodness"), [
    ([True, False, False], "linear"), ([False, True, False], "energy"),
    ([True, True, True], "linear"), ([True, False, True], "energy")])
def test_multipass_equals_one_full_run_per_candidate(contextual, goodness):
    model = _model(contextual, goodness=goodness, injection="bias+film", norm="l2")
    x = torch.randn(5, 1, 8, 8)
    expected = torch.zeros(5, K)
    with torch.no_grad():
        for c in range(K):
            context = torch.eye(K)[c].expand(5, K)
            h = x
            for block in model.blocks:
                h = block(h, context)
                expected[:, c] += block.goodness(h, context)
    assert torch.allclose(multipass_scores(model, x), expected, atol=1e-5)
    assert available_modes(model) == ["multipass"]


def test_validation_during_training_scores_like_multipass():
    model = _model([True, False, False], score_blocks=[1, 2])
    x, y = torch.randn(40, 1, 8, 8), torch.randint(0, K, (40,))
    block_acc, summed = evaluate_upto(model, TensorDataset(x, y), 2, batch_size=16)
    with torch.no_grad():
        preds = multipass_scores(model, x).argmax(1)
        last = block_scores(model, x)[2].argmax(1)
    assert summed == pytest.approx(float((preds == y).float().mean()))
    assert block_acc == pytest.approx(float((last == y).float().mean()))


@pytest.mark.parametrize("contextual", [[True, True, True], [True, False, False]])
def test_contextual_prefix_models_are_label_free(contextual):
    model = _model(contextual)
    x, y = torch.randn(60, 1, 8, 8), torch.randint(0, K, (60,))

    def run(labels):
        data = TensorDataset(x) if labels is None else TensorDataset(x, labels)
        return predict(model, DataLoader(data, batch_size=16), "multipass")

    assert_label_free(run, y)


# --- whole runs ----------------------------------------------------------------------------

def _contextual_app(**trainer_kw):
    cfg = small_app(blocks=[[1, 8, 3], [2, 12, 3]], max_train_samples=600, **trainer_kw)
    cfg.model.contextual = [True, False]
    return cfg


def test_a_first_block_contextual_model_learns_on_generate_data_pairs(tmp_path):
    cfg = _contextual_app(objective="contrast", epochs=4)
    cfg.data.negatives = 9
    summary = train_run(cfg, tmp_path)
    assert summary["test_accuracy"]["multipass"] > 0.8, summary["test_accuracy"]
    assert "onepass" not in summary["test_accuracy"]
    assert "depends on the context" in summary["prefix_cache"]["1"]
    assert summary["contextual"] == [True, False] and summary["negatives"] == 9


def test_a_contextual_prefix_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    full = train_run(_contextual_app(objective="bce"), tmp_path / "full")

    class Interrupt(Exception):
        pass

    original = BlockwiseTrainer._fit_block

    def stop_after_block_zero(self, b, *args):
        if b == 1:
            raise Interrupt
        return original(self, b, *args)

    monkeypatch.setattr(BlockwiseTrainer, "_fit_block", stop_after_block_zero)
    with pytest.raises(Interrupt):
        train_run(_contextual_app(objective="bce"), tmp_path / "cut")
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "cut" / "checkpoint.pt")["progress"]["block"] == 0
    cfg = _contextual_app(objective="bce")
    cfg.resume = True
    resumed = train_run(cfg, tmp_path / "cut")
    a = load_checkpoint(tmp_path / "full" / "checkpoint.pt")["state_dict"]
    b = load_checkpoint(tmp_path / "cut" / "checkpoint.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["test_accuracy"] == full["test_accuracy"]


def test_cache_on_is_refused_when_the_prefix_reads_the_context(tmp_path):
    with pytest.raises(PrefixCacheError, match="prefix depends on the context .block 0's conv"):
        train_run(_contextual_app(cache_prefix="on"), tmp_path)


def test_validation_only_runs_never_read_the_test_split(tmp_path, monkeypatch):
    import ctxconv.train.run as run_module

    seen = []
    original = run_module.evaluate

    def spy(model, loader, mode, *rest):
        seen.append(len(loader.dataset))
        return original(model, loader, mode, *rest)

    monkeypatch.setattr(run_module, "evaluate", spy)
    cfg = small_app()
    cfg.evaluate_test = False
    summary = train_run(cfg, tmp_path)
    assert summary["test_accuracy"] is None and summary["val_accuracy"]["onepass"] > 0
    assert set(seen) == {summary["val_size"]}


# --- the backprop baseline as a trainer method -----------------------------------------------

def test_backprop_method_trains_end_to_end_and_resumes(tmp_path, monkeypatch):
    full = train_run(small_app(method="backprop", epochs=3), tmp_path / "full")
    assert full["test_accuracy"]["onepass"] > 0.8 and full["method"] == "backprop"
    rows = [json.loads(line) for line in open(tmp_path / "full" / "metrics.jsonl")]
    assert [(r["block"], r["epoch"]) for r in rows] == [(1, 0), (1, 1), (1, 2)]

    class Interrupt(Exception):
        pass

    original = BlockwiseTrainer._end_epoch

    def stop_after_first_epoch(self, b, epoch, *args):
        seconds = original(self, b, epoch, *args)
        if epoch == 0:
            raise Interrupt
        return seconds

    monkeypatch.setattr(BlockwiseTrainer, "_end_epoch", stop_after_first_epoch)
    with pytest.raises(Interrupt):
        train_run(small_app(method="backprop", epochs=3), tmp_path / "cut")
    monkeypatch.undo()
    cfg = small_app(method="backprop", epochs=3)
    cfg.resume = True
    train_run(cfg, tmp_path / "cut")
    a = load_checkpoint(tmp_path / "full" / "checkpoint.pt")["state_dict"]
    b = load_checkpoint(tmp_path / "cut" / "checkpoint.pt")["state_dict"]
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)


def test_backprop_method_errors(tmp_path):
    cfg = _contextual_app(method="backprop")
    with pytest.raises(ValueError, match="trainer.method=backprop trains context-free models"):
        train_run(cfg, tmp_path / "ctx")
    with pytest.raises(ValueError, match="unknown trainer.method 'sgd'; choose one of"):
        train_run(small_app(method="sgd"), tmp_path / "bad")
