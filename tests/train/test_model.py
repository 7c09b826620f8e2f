"""Blocks, the model factory and the two inference modes (label leakage: test_label_leakage)."""

import pytest
import torch

from ctxconv.train.blocks import ContextualConv2d, ContextualConvBlock, grid_size
from ctxconv.train.inference import available_modes, multipass_scores, onepass_scores
from ctxconv.train.model import ModelConfig, build_model


def tiny_cfg(**kw) -> ModelConfig:
    base = dict(blocks=[[1, 4, 3], [2, 6, 3]], in_channels=1, image_size=8, num_classes=5)
    return ModelConfig(**{**base, **kw})


def test_contextual_conv_bias_is_a_per_class_per_channel_bias():
    torch.manual_seed(0)
    conv = ContextualConv2d(2, 3, 3, num_classes=4, injection="bias", batch_norm=False)
    x = torch.randn(1, 2, 5, 5)
    ctx = torch.eye(4)[[2]]
    plain = conv.conv(x)
    out = conv(x, ctx)
    expected = plain + conv.context_bias.weight[:, 2].view(1, 3, 1, 1)
    assert torch.allclose(out, expected, atol=1e-6)


def test_contextual_conv_film_scale_and_missing_context():
    conv = ContextualConv2d(1, 2, 3, num_classes=3, injection="film", batch_norm=False)
    with torch.no_grad():
        conv.context_scale.weight.fill_(1.0)  # scale 1 + 1 = 2 for any one-hot context
    x = torch.randn(2, 1, 4, 4)
    assert torch.allclose(conv(x, torch.eye(3)[[0, 1]]), 2 * conv.conv(x), atol=1e-6)
    with pytest.raises(ValueError, match="pass a \\(B, K\\) context"):
        conv(x)
    with pytest.raises(ValueError, match="unknown context injection 'shift'"):
        ContextualConv2d(1, 2, 3, 3, injection="shift")


def test_block_shapes_and_grid():
    block = ContextualConvBlock(3, 28, 2, 8, 3, num_classes=10, max_grid=4)
    h = block(torch.randn(2, 3, 28, 28))
    assert h.shape == (2, 8, 14, 14)
    assert block.goodness.grid == 2 and grid_size(28, 4) == 4 and grid_size(7, 4) == 1
    assert block.all_class_goodness(torch.randn(2, 3, 28, 28)).shape == (2, 10)


def test_energy_goodness_needs_a_contextual_block():
    with pytest.raises(ValueError, match="energy goodness needs a block whose output depends"):
        ContextualConvBlock(1, 8, 1, 4, 3, 3, injection="none", goodness="energy")


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        (dict(blocks=[]), "model.blocks is empty"),
        (dict(blocks=[[1, 4]]), r"expected \[pool, filters, kernel\]"),
        (dict(blocks=[[1, 4, 2]]), "must be odd"),
        (dict(contextual=[True]), "2 blocks"),
        (dict(score_blocks=[5]), "block 5 does not exist"),
        (dict(blocks=[[3, 4, 3]]), "pool 3 does not divide the 8x8"),
    ],
)
def test_bad_model_configs(kw, message):
    with pytest.raises(ValueError, match=message):
        build_model(tiny_cfg(**kw))


def test_onepass_equals_multipass_for_context_free_blocks():
    torch.manual_seed(1)
    model = build_model(tiny_cfg()).eval()
    x = torch.randn(7, 1, 8, 8)
    assert model.supports_onepass
    assert torch.allclose(onepass_scores(model, x), multipass_scores(model, x), atol=1e-5)


def test_contextual_last_block_is_multipass_only():
    torch.manual_seed(2)
    model = build_model(tiny_cfg(contextual=[False, True], goodness="energy")).eval()
    assert available_modes(model) == ["multipass"]
    x = torch.randn(3, 1, 8, 8)
    scores = multipass_scores(model, x)
    # block 0 is context-free (linear goodness), block 1 runs once per candidate context
    assert scores.shape == (3, 5)
    with pytest.raises(ValueError, match="use mode=multipass"):
        onepass_scores(model, x)


def test_multipass_runs_one_pass_per_candidate_context():
    """Multipass scores of a contextual block equal explicit per-context passes."""
    torch.manual_seed(3)
    model = build_model(tiny_cfg(contextual=[False, True], injection="bias+film")).eval()
    x = torch.randn(4, 1, 8, 8)
    scores = multipass_scores(model, x)
    h = model.blocks[0](x)
    for c in range(5):
        ctx = torch.eye(5)[[c] * 4]
        expected = model.blocks[0].goodness(h, ctx) + model.blocks[1].goodness(
            model.blocks[1](h, ctx), ctx
        )
        assert torch.allclose(scores[:, c], expected, atol=1e-5)


def test_goodness_per_block_builds_each_blocks_head():
    from ctxconv.train.blocks import EnergyGoodness, LinearGoodness

    cfg = ModelConfig(blocks=[[1, 4, 3], [2, 4, 3], [2, 4, 3]], contextual=[True, False, False],
                      goodness=["energy", "energy", "linear"], image_size=8)
    kinds = [type(b.goodness) for b in build_model(cfg).blocks]
    assert kinds == [EnergyGoodness, EnergyGoodness, LinearGoodness]


@pytest.mark.parametrize("goodness,message", [
    (["energy", "linear"], "model.goodness has 2 entries for 3 blocks"),
    (["energy", "cosine", "linear"], "unknown model.goodness 'cosine'"),
    (["linear", "linear", "energy"], "energy goodness needs a block whose output depends"),
    (5, r"model.goodness=5: give one of \['linear', 'energy'\], or a list"),
])
def test_goodness_per_block_errors_say_what_to_fix(goodness, message):
    cfg = ModelConfig(blocks=[[1, 4, 3], [2, 4, 3], [2, 4, 3]], goodness=goodness, image_size=8)
    with pytest.raises(ValueError, match=message):
        build_model(cfg)
