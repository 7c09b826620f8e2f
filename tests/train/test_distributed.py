"""Data-parallel training: torchrun environment checks, DDP against one process, torchrun jobs."""

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp
from tiny_runs import ddp_step, small_app, stuck_rank

from ctxconv.export.exporter import ExportOptions, export_run
from ctxconv.train import run as run_mod
from ctxconv.train.checkpoint import load_checkpoint
from ctxconv.train.data_gen import DataGenConfig
from ctxconv.train.distributed import (
    DistContext,
    DistributedConfigError,
    context_from_env,
    init,
    shard_batches,
)
from ctxconv.train.model import ModelConfig, build_model
from ctxconv.train.objectives import BlockObjective
from ctxconv.train.run import train_run
from ctxconv.train.trainer import BlockwiseTrainer

TINY = ["data.max_train_samples=600", "model.blocks=[[1,8,3],[2,16,3]]", "trainer.epochs=3",
        "trainer.progress=false", "trainer.device=cpu"]


def test_torchrun_environment_is_checked():
    assert context_from_env({}) == DistContext()
    assert context_from_env({"WORLD_SIZE": "1"}) == DistContext()
    env = {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "MASTER_ADDR": "localhost",
           "MASTER_PORT": "29500"}
    assert context_from_env(env) == DistContext(rank=1, world_size=2, local_rank=1)
    with pytest.raises(DistributedConfigError, match=r"WORLD_SIZE=2 but RANK, MASTER_PORT unset: "
                                                     r"start the job with torchrun"):
        context_from_env({"WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "h"})
    with pytest.raises(DistributedConfigError, match=r"WORLD_SIZE='two' is not a positive"):
        context_from_env({"WORLD_SIZE": "two"})
    with pytest.raises(DistributedConfigError, match=r"RANK=2 is outside 0..1"):
        context_from_env({**env, "RANK": "2"})


def test_batch_and_backend_checks_come_before_joining():
    ctx = DistContext(rank=0, world_size=3)
    with pytest.raises(DistributedConfigError, match=r"data.batch_size=64 is the global batch and "
                                                     r"must divide evenly over 3 processes"):
        init(ctx, torch.device("cpu"), 64)
    with pytest.raises(DistributedConfigError, match=r"no backend for mps"):
        init(ctx, torch.device("mps"), 63)


def test_shards_cover_the_set_once_per_epoch():
    ranks = [list(shard_batches(10, 4, seed=3, ctx=DistContext(r, 2))) for r in range(2)]
    assert [len(b) for b in ranks[0]] == [2, 2, 1] == [len(b) for b in ranks[1]]
    seen = torch.cat([torch.cat(r) for r in ranks])
    assert sorted(seen.tolist()) == list(range(10))
    assert [b.tolist() for b in ranks[0]] != [b.tolist() for b in
                                              shard_batches(10, 4, 4, DistContext(0, 2))]


def test_ddp_step_equals_one_process_step_on_the_global_batch(tmp_path):
    torch.manual_seed(1)
    x, y = torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,))
    mp.spawn(ddp_step, args=(str(tmp_path / "store"), x, y, str(tmp_path / "w")), nprocs=2)
    torch.manual_seed(0)
    block = build_model(ModelConfig(blocks=[[1, 8, 3]], norm="l2")).blocks[0]
    before = {k: v.clone() for k, v in block.state_dict().items()}
    opt = torch.optim.SGD(block.parameters(), lr=0.5)
    loss, _ = BlockObjective(block, "softmax", DataGenConfig(num_classes=10))(x, y)
    loss.backward()
    opt.step()
    ranks = [torch.load(tmp_path / f"w.{r}") for r in range(2)]
    for k, v in block.state_dict().items():
        assert not torch.equal(v, before[k])
        for r in ranks:
            torch.testing.assert_close(r[k], v, rtol=1e-5, atol=1e-6)


def torchrun(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "ctxconv.train.cli", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


class Interrupt(Exception):
    pass


def test_two_process_gloo_job_trains_resumes_and_exports(tmp_path, monkeypatch, digits_run):
    # a two-process run from scratch, against one process on the same config
    out = torchrun(f"hydra.run.dir={tmp_path / 'two'}", *TINY)
    assert out.stdout.count('"test_accuracy"') == 1, out.stdout  # rank 0 alone reports
    two = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert two["processes"] == 2
    one = json.loads((digits_run / "summary.json").read_text())  # TINY in one process
    for mode in ("multipass", "onepass"):
        assert two["test_accuracy"][mode] >= 0.85
        assert abs(two["test_accuracy"][mode] - one["test_accuracy"][mode]) <= 0.04
    rows = [json.loads(line) for line in open(tmp_path / "two" / "metrics.jsonl")]
    assert [(r["block"], r["epoch"]) for r in rows] == [(b, e) for b in (0, 1) for e in (0, 1, 2)]

    # an interrupted run (after block 1, epoch 0) finished by a two-process job
    original = BlockwiseTrainer._end_epoch

    def stop(self, b, epoch, *args):
        seconds = original(self, b, epoch, *args)
        if (b, epoch) == (1, 0):
            raise Interrupt
        return seconds

    monkeypatch.setattr(BlockwiseTrainer, "_end_epoch", stop)
    with pytest.raises(Interrupt):
        train_run(small_app([[1, 8, 3], [2, 16, 3]], max_train_samples=600, epochs=3,
                            device="cpu"), tmp_path / "cut")
    monkeypatch.undo()
    cut = load_checkpoint(tmp_path / "cut" / "checkpoint.pt")
    torchrun(f"hydra.run.dir={tmp_path / 'cut'}", "resume=true", *TINY)
    done = load_checkpoint(tmp_path / "cut" / "checkpoint.pt")
    assert done["progress"]["done"] and "optimizer" not in done
    assert all(torch.equal(v, done["state_dict"][k])  # the frozen prefix stays as it was
               for k, v in cut["state_dict"].items() if k.startswith("blocks.0."))
    assert not all(torch.equal(v, done["state_dict"][k])
                   for k, v in cut["state_dict"].items() if k.startswith("blocks.1."))
    rows = [json.loads(line) for line in open(tmp_path / "cut" / "metrics.jsonl")]
    assert [(r["block"], r["epoch"]) for r in rows] == [(b, e) for b in (0, 1) for e in (0, 1, 2)]

    # rank 0's run directory is a complete run: ctxconv-export accepts it
    manifest = export_run(tmp_path / "two", tmp_path / "two" / "export",
                          ExportOptions(verify_samples=60))
    assert manifest["accuracy"]["int8"]["onepass"] >= 0.85


def test_a_half_set_torchrun_environment_is_a_one_line_cli_error(tmp_path):
    env = {**os.environ, "WORLD_SIZE": "2"}
    for var in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    out = subprocess.run([sys.executable, "-m", "ctxconv.train.cli", f"hydra.run.dir={tmp_path}"],
                         capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "WORLD_SIZE=2 but RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT unset: start the job " \
           "with torchrun" in out.stderr, out.stderr[-2000:]


def test_dist_timeout_is_a_config_key_passed_to_the_process_group(monkeypatch):
    from datetime import timedelta

    import torch.distributed as dist

    from ctxconv.train.trainer import TrainerConfig

    assert 60 <= TrainerConfig().dist_timeout_s <= 600  # minutes, not half an hour
    seen = {}

    def joined(ctx, device, batch_size, timeout_s):
        seen["t"] = timeout_s
        raise Interrupt

    monkeypatch.setattr(run_mod.distributed, "init", joined)
    with pytest.raises(Interrupt):
        train_run(small_app(dist_timeout_s=42.0, device="cpu"), "unused")
    assert seen["t"] == 42.0
    monkeypatch.undo()
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda *a, **kw: seen.update(kw))
    init(DistContext(0, 2), torch.device("cpu"), 64, timeout_s=42.0)
    assert seen["timeout"] == timedelta(seconds=42)


def test_a_stuck_rank_ends_the_wait_with_an_error_naming_the_rank(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(stuck_rank, args=(port, str(tmp_path / "err")), nprocs=2)
    seconds, text = (tmp_path / "err").read_text().split(" ", 1)
    assert text.startswith("rank 0 of 2 waited more than trainer.dist_timeout_s=2s for the "
                           "other ranks during a barrier: a rank is stuck or has died"), text
    assert float(seconds) < 6
