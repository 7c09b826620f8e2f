"""ctxconv-train end to end through Hydra: overrides, run directory, the default job."""

import json
import subprocess
import sys

import pytest

TRAIN = [sys.executable, "-m", "ctxconv.train.cli"]


def run(*args, check=True):
    out = subprocess.run([*TRAIN, *args], capture_output=True, text=True, timeout=300)
    if check and out.returncode != 0:
        raise AssertionError(out.stdout + out.stderr)
    return out


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.epochz=3", "Key 'epochz' not in 'TrainerConfig'"),
        ("trainer.lr=fast", "Value 'fast' of type 'str' could not be converted to Float"),
        ("data=imagenet", "Could not find 'data/imagenet'"),
    ],
)
def test_bad_overrides_are_rejected(override, message, tmp_path):
    out = run(override, f"hydra.run.dir={tmp_path}", check=False)
    assert out.returncode != 0
    assert message in out.stderr, out.stderr[-2000:]
    assert not (tmp_path / "checkpoint.pt").exists()


def test_default_job_on_digits(tmp_path):
    """The default ctxconv-train reaches the digits target in both inference modes."""
    out = run(f"hydra.run.dir={tmp_path}", "trainer.progress=false")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["run_dir"] == str(tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["dataset"] == "digits"
    for mode in ("multipass", "onepass"):
        assert summary["test_accuracy"][mode] >= 0.97, summary["test_accuracy"]
    assert "block 1 epoch 14" in out.stdout + out.stderr  # epoch lines are logged
