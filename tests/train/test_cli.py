"""ctxconv-train end to end through Hydra: overrides, run directory, the default job."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

TRAIN = [sys.executable, "-m", "ctxconv.train.cli"]


def run(*args, check=True, env=None):
    out = subprocess.run([*TRAIN, *args], capture_output=True, text=True, timeout=300,
                         env={**os.environ, **(env or {})})
    if check and out.returncode != 0:
        raise AssertionError(out.stdout + out.stderr)
    return out


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.epochz=3", "error: unknown key 'trainer.epochz' in override 'trainer.epochz=3'"
         ": the ctxconv-train config has no such field; did you mean 'trainer.epochs'?"),
        ("+trainer.epoch=3", "(a leading + cannot add one); did you mean 'trainer.epochs'?"),
        ("trainer.lr=fast", "Value 'fast' of type 'str' could not be converted to Float"),
        ("data=imagenet", "error: unknown data option 'imagenet' in override 'data=imagenet': "
         "choose one of cifar10, cifar100, digits, fashion_mnist, mnist"),
        ("data=fashion", "error: unknown data option 'fashion' in override 'data=fashion': "
         "choose one of cifar10, cifar100, digits, fashion_mnist, mnist; did you mean "
         "fashion_mnist?"),
        ("data.batch_size=0", "error: data.batch_size=0: must be an integer >= 1"),
        ("trainer.epochs=0", "error: trainer.epochs=0: must be an integer >= 1"),
        ("data.val_ratio=0", "error: data.val_ratio=0.0: must lie strictly between 0 and 1"),
        ("data.max_train_samples=0",
         "error: data.max_train_samples=0: must be an integer >= 1 or null"),
        ("trainer.dist_timeout_s=0", "error: trainer.dist_timeout_s=0.0: must be > 0"),
    ],
)
def test_bad_overrides_are_rejected(override, message, tmp_path):
    out = run(override, f"hydra.run.dir={tmp_path}", check=False)
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.strip().splitlines() == [out.stderr.strip()], out.stderr[-2000:]
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


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        (lambda d: (d / "checkpoint.pt").write_bytes(b"x"), [],
         "error: {d} already holds a run: add resume=true to continue it"),
        (lambda d: None, ["resume=true"], "error: resume=true but {d} has no checkpoint.pt"),
        (lambda d: None, ["data=mnist", "data.data_dir={d}/nowhere", "data.download=false"],
         "error: dataset 'mnist' is not in {d}/nowhere and could not be downloaded"),
    ],
)
def test_user_errors_print_one_line_without_traceback(tmp_path, setup, args, message):
    setup(tmp_path)
    args = [a.format(d=tmp_path) for a in args]
    out = run(f"hydra.run.dir={tmp_path}", "trainer.progress=false", *args, check=False)
    assert out.returncode == 2, out.stderr[-2000:]
    assert message.format(d=tmp_path) in out.stderr, out.stderr[-2000:]
    assert "Traceback" not in out.stderr and out.stderr.count("error:") == 1


def test_run_dir_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "f").write_text("")
    for target in ("f", "f/run"):
        out = run(f"hydra.run.dir={tmp_path / target}", check=False)
        assert out.returncode == 2
        assert out.stderr.strip().splitlines() == [
            f"error: hydra.run.dir={tmp_path / target}: {tmp_path / 'f'} is a file, not a "
            "directory; choose another hydra.run.dir"]


def test_ctrl_c_prints_how_to_resume_and_keeps_the_checkpoint(tmp_path):
    import signal
    import time

    from ctxconv.train.checkpoint import load_checkpoint

    proc = subprocess.Popen([*TRAIN, f"hydra.run.dir={tmp_path}", "trainer.epochs=500",
                             "data.max_train_samples=200", "trainer.progress=false",
                             "trainer.device=cpu"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    end = time.monotonic() + 120
    while not (tmp_path / "checkpoint.pt").exists() and time.monotonic() < end:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        f"interrupted; resume with ctxconv-train hydra.run.dir={tmp_path} resume=true (the "
        "checkpoint of the last completed epoch is intact)")
    assert err.count("interrupted") == 1
    assert load_checkpoint(tmp_path / "checkpoint.pt")["progress"]["done"] is False


def test_debug_env_shows_the_traceback(tmp_path):
    out = run(f"hydra.run.dir={tmp_path}", "resume=true", check=False,
              env={"CTXCONV_DEBUG": "1", "HYDRA_FULL_ERROR": "1"})
    assert out.returncode != 0 and "Traceback" in out.stderr
    assert "CheckpointError: resume=true but" in out.stderr


def test_help_names_the_app_its_groups_and_the_readme():
    text = run("--help").stdout
    assert text.startswith("ctxconv-train: forward-only, block-wise training")
    assert "powered by Hydra" not in text and "mcu" not in text
    assert 'The README (section "Training: ctxconv-train")' in text
    configs = Path(__file__).resolve().parents[2] / "ctxconv/configs"
    for group in ("data", "model", "trainer", "experiment"):
        line = next(ln for ln in text.splitlines() if ln.strip().startswith(f"{group}="))
        listed = line.split()[0].split("=", 1)[1].split("|")
        assert sorted(listed) == sorted(p.stem for p in (configs / group).glob("*.yaml")), group
    for option in ("hydra.run.dir=DIR", "resume=true", "overwrite=true", "trainer.epochs=N"):
        assert option in text


def test_resume_uses_the_stored_config(tmp_path):
    """Resume needs no repeated overrides; a contradicting one is a one-line error."""
    first = ["model.blocks=[[1,4,3],[2,4,3]]", "trainer.epochs=1", "data.max_train_samples=200"]
    run(f"hydra.run.dir={tmp_path}", "trainer.progress=false", *first)
    out = run(f"hydra.run.dir={tmp_path}", "resume=true", "trainer.progress=false")
    assert json.loads(out.stdout.strip().splitlines()[-1])["run_dir"] == str(tmp_path)
    out = run(f"hydra.run.dir={tmp_path}", "resume=true", "trainer.epochs=2", check=False)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert ("'trainer.epochs=2' sets trainer.epochs=2 but the run has trainer.epochs=1"
            in out.stderr)


def test_a_run_trained_on_validation_reads_its_test_split_later_without_training(tmp_path):
    """Choose on validation, then ``resume=true evaluate_test=true`` reads the test split of
    the chosen run once: the weights and the epoch log stay as they were."""
    first = ["model.blocks=[[1,4,3],[2,4,3]]", "trainer.epochs=1", "data.max_train_samples=200",
             "trainer.progress=false"]
    run(f"hydra.run.dir={tmp_path}", "evaluate_test=false", "trainer.device=cpu", *first)
    before = json.loads((tmp_path / "summary.json").read_text())
    assert before["test_accuracy"] is None
    metrics = (tmp_path / "metrics.jsonl").read_text()
    before_ckpt = tmp_path.parent / f"{tmp_path.name}_before.pt"
    before_ckpt.write_bytes((tmp_path / "checkpoint.pt").read_bytes())
    out = run(f"hydra.run.dir={tmp_path}", "resume=true", "evaluate_test=true",
              "trainer.progress=false", "trainer.device=auto")  # evaluated elsewhere
    after = json.loads((tmp_path / "summary.json").read_text())
    assert set(after["test_accuracy"]) == set(after["val_accuracy"])
    assert after["val_accuracy"] == before["val_accuracy"]
    assert after["train_seconds"] == before["train_seconds"]
    assert (tmp_path / "metrics.jsonl").read_text() == metrics  # no epoch was trained
    assert "test_accuracy" in out.stdout.strip().splitlines()[-1]
    import torch

    from ctxconv.train.checkpoint import load_checkpoint

    old = load_checkpoint(before_ckpt)["state_dict"]
    new = load_checkpoint(tmp_path / "checkpoint.pt")["state_dict"]
    assert all(torch.equal(old[k], new[k]) for k in old)
