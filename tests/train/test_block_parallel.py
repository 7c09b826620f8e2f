"""Block-parallel training (trainer.parallel=block): each torchrun process trains a stage of
blocks, activations flow forward, and the weights equal the simultaneous schedule's."""

import json
import os
import subprocess
import sys

import pytest
import torch

from ctxconv.train.block_parallel import stage_blocks, stage_state
from ctxconv.train.checkpoint import load_checkpoint
from ctxconv.train.distributed import DistributedConfigError

TINY = ["data.max_train_samples=400", "model.blocks=[[1,8,3],[2,12,3],[1,16,3]]",
        "trainer.epochs=2", "trainer.progress=false", "trainer.device=cpu",
        "trainer.schedule=simultaneous", "trainer.augment=1", "trainer.flip=true"]


def train(run_dir, processes: int, *extra: str) -> subprocess.CompletedProcess:
    cli = ["-m", "ctxconv.train.cli", f"hydra.run.dir={run_dir}", *TINY, *extra]
    cmd = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
            str(processes), *cli] if processes > 1 else [sys.executable, *cli])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)


def test_stages_are_contiguous_and_cover_every_block():
    assert stage_blocks(3, 2) == [range(0, 2), range(2, 3)]
    assert stage_blocks(5, 2) == [range(0, 2), range(2, 5)]
    assert stage_blocks(4, 4) == [range(i, i + 1) for i in range(4)]
    with pytest.raises(DistributedConfigError, match="at most 2"):
        stage_blocks(2, 3)


def test_resume_needs_the_processes_it_was_trained_with():
    states = {"optimizer": {"stages": [{}, {}]}}
    assert stage_state(states, "optimizer", 1, 2) == {}
    with pytest.raises(DistributedConfigError, match="nproc-per-node 2"):
        stage_state(states, "optimizer", 0, 3)
    with pytest.raises(DistributedConfigError, match="one process or data-parallel"):
        stage_state({"optimizer": {"state": {}}}, "optimizer", 0, 2)


def test_two_stages_train_the_weights_of_one_simultaneous_process(tmp_path):
    one = train(tmp_path / "one", 1)
    assert one.returncode == 0, one.stderr[-3000:]
    two = train(tmp_path / "two", 2, "trainer.parallel=block")
    assert two.returncode == 0, two.stdout[-2000:] + two.stderr[-3000:]
    a = load_checkpoint(tmp_path / "one" / "checkpoint.pt")["state_dict"]
    b = load_checkpoint(tmp_path / "two" / "checkpoint.pt")["state_dict"]
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-5), f"{k} differs"
    rows = [json.loads(line) for line in open(tmp_path / "two" / "metrics.jsonl")]
    ref = [json.loads(line) for line in open(tmp_path / "one" / "metrics.jsonl")]
    assert [(r["block"], r["epoch"]) for r in rows] == [(2, 0), (2, 1)]
    for r, q in zip(rows, ref, strict=True):
        assert r["train_acc"] == pytest.approx(q["train_acc"], abs=1e-6)
        assert r["train_loss"] == pytest.approx(q["train_loss"], rel=1e-5)
        assert r["val_acc"] == pytest.approx(q["val_acc"], abs=1e-9)
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["processes"] == 2


def test_block_parallel_needs_the_simultaneous_schedule(tmp_path):
    out = train(tmp_path / "run", 1, "trainer.schedule=sequential", "trainer.parallel=block")
    assert out.returncode == 2
    assert "set trainer.schedule=simultaneous" in out.stderr.strip().splitlines()[-1]


def test_data_parallel_trains_the_simultaneous_schedule_too(tmp_path):
    """Two data-parallel processes (each half of every batch) learn as one process does."""
    results = {}
    for n in (1, 2):
        out = train(tmp_path / f"p{n}", n, "trainer.epochs=4")
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
        results[n] = json.loads((tmp_path / f"p{n}" / "summary.json").read_text())
    assert results[2]["processes"] == 2 and results[2]["schedule"] == "simultaneous"
    one, two = (results[n]["test_accuracy"]["multipass"] for n in (1, 2))
    assert two > 0.4 and abs(two - one) < 0.15, (one, two)  # chance is 0.1
