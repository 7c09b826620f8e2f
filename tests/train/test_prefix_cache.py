"""Frozen-prefix cache: the same training with and without it, one prefix pass per block."""

import json

import pytest
import torch
from tiny_runs import small_app

from ctxconv.train.data import DataConfig, load_datasets
from ctxconv.train.data_gen import DataGenConfig
from ctxconv.train.model import ModelConfig, build_model
from ctxconv.train.prefix_cache import PrefixCacheError, plan_cache
from ctxconv.train.run import train_run
from ctxconv.train.trainer import BlockwiseTrainer, TrainerConfig

THREE_BLOCKS = [[1, 8, 3], [2, 12, 3], [2, 16, 3]]  # pooling blocks: the cache holds pooled maps


def losses(run_dir) -> list[float]:
    return [json.loads(line)["train_loss"] for line in open(run_dir / "metrics.jsonl")]


def test_identical_losses_with_and_without_the_cache(tmp_path):
    on = train_run(small_app(THREE_BLOCKS, cache_prefix="on"), tmp_path / "on")
    off = train_run(small_app(THREE_BLOCKS, cache_prefix="off"), tmp_path / "off")
    assert on["prefix_cache"]["1"].endswith("on cpu") and off["prefix_cache"]["1"] == (
        "cache_prefix=off")
    assert losses(tmp_path / "on") == losses(tmp_path / "off")  # float32, bit for bit
    assert on["test_accuracy"] == off["test_accuracy"]


def test_bfloat16_cache_when_float32_does_not_fit(tmp_path):
    # 270 images x 8 x 4 x 4 (block 1's pooled input) = 138 KB in float32, 69 KB in bfloat16
    budget_gb = 100e3 / 2**30
    cfg = small_app(cache_prefix="auto", cache_budget_gb=budget_gb)
    summary = train_run(cfg, tmp_path / "bf16")
    assert summary["prefix_cache"]["1"].startswith("0 MiB on cpu")
    train_run(small_app(cache_prefix="off"), tmp_path / "off")
    a, b = losses(tmp_path / "bf16"), losses(tmp_path / "off")
    assert a[:2] == b[:2] and a[2:] != b[2:]  # block 0 untouched; block 1 sees rounded inputs
    assert a[2:] == pytest.approx(b[2:], rel=2e-2)


def test_an_epoch_of_block_i_runs_the_prefix_once_per_image(tmp_path):
    train, val, _, _ = load_datasets(DataConfig(dataset="digits", max_train_samples=200))
    seen = {}
    for mode in ("on", "off"):
        torch.manual_seed(0)
        model = build_model(ModelConfig(blocks=[[1, 8, 3], [2, 12, 3]]))
        trainer = BlockwiseTrainer(model, TrainerConfig(epochs=3, progress=False,
                                                        cache_prefix=mode),
                                   DataGenConfig(num_classes=10), tmp_path)
        trainer._fit_block(0, train, val, 0, None)
        images = []
        hook = model.blocks[0].register_forward_hook(lambda m, i, o, n=images: n.append(len(o)))
        trainer._fit_block(1, train, val, 0, None)
        hook.remove()
        seen[mode] = sum(images) - 3 * len(val)  # minus the per-epoch validation
    assert seen == {"on": len(train), "off": 3 * len(train)}


def test_plan_decisions_and_errors():
    cpu = torch.device("cpu")
    shape, n = (8, 4, 4), 1000  # 512 KB in float32
    assert plan_cache("off", False, 1, shape, n, cpu, 2**30).reason == "cache_prefix=off"
    assert plan_cache("auto", True, 1, shape, n, cpu, 2**30).reason == "augmentation is on"
    assert not plan_cache("auto", False, 0, shape, n, cpu, 2**30).enabled
    last = plan_cache("auto", False, 1, shape, n, cpu, 2**30, epochs=1)
    assert not last.enabled and last.reason.startswith("one epoch to go")
    assert plan_cache("on", False, 1, shape, n, cpu, 2**30, epochs=1).enabled
    plan = plan_cache("auto", False, 1, shape, n, cpu, 2**30)
    assert (plan.device, plan.dtype, plan.nbytes) == (cpu, torch.float32, 512_000)
    assert plan_cache("auto", False, 1, shape, n, cpu, 300_000).dtype == torch.bfloat16
    too_small = plan_cache("auto", False, 2, shape, n, cpu, 100_000)
    assert not too_small.enabled and "needs 0 MiB even in bfloat16" in too_small.reason
    with pytest.raises(PrefixCacheError, match=r"cache_prefix=on needs augmentation off"):
        plan_cache("on", True, 1, shape, n, cpu, 2**30)
    with pytest.raises(PrefixCacheError, match=r"cache_prefix=on but the prefix output of block 2 "
                                               r"needs .* raise trainer.cache_budget_gb"):
        plan_cache("on", False, 2, shape, n, cpu, 100_000)
    with pytest.raises(PrefixCacheError, match=r"unknown trainer.cache_prefix 'yes'"):
        plan_cache("yes", False, 1, shape, n, cpu)


def test_augmentation_turns_auto_off(tmp_path):
    summary = train_run(small_app(cache_prefix="auto", augment=1), tmp_path)
    assert summary["prefix_cache"]["1"] == "augmentation is on"
