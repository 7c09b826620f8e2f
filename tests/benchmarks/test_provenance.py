"""Benchmark sections keep their own provenance: rendering never restamps them."""

import json
import shutil
import sys
from pathlib import Path

import pytest

from benchmarks import provenance, report

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"

OLD = {"machine": "Some CPU, 2 cores, Python 3.10.0", "date": "2020-01-02", "commit": "abc1234",
       "command": "python benchmarks/train_bench.py --only digits"}


@pytest.fixture
def results(tmp_path, monkeypatch):
    """report's output redirected to a copy of the committed results."""
    res = tmp_path / "results"
    shutil.copytree(BENCH / "results", res)
    monkeypatch.setattr(report, "RESULTS", res)
    monkeypatch.setattr(report, "BENCHMARKS_MD", tmp_path / "BENCHMARKS.md")
    return res


def _digits_section() -> dict:
    return {"command": "ctxconv-train hydra.run.dir=x", "wall_seconds": 1.0,
            "summary": {"test_accuracy": {"multipass": 0.5, "onepass": 0.5},
                        "train_seconds": 1.0, "test_size": 10},
            "provenance": dict(OLD)}


def test_render_twice_keeps_each_sections_provenance(results, monkeypatch, capsys):
    from benchmarks import train_bench

    res = json.loads((results / "train.json").read_text())
    res["digits"] = _digits_section()
    (results / "train.json").write_text(json.dumps(res))
    before = (results / "train.json").read_text()
    monkeypatch.setattr(sys, "argv", ["train_bench.py", "--render"])
    train_bench.main()
    first = (results / "train.md").read_text()
    train_bench.main()
    assert (results / "train.md").read_text() == first
    assert (results / "train.json").read_text() == before  # the numbers' file is not rewritten
    assert ("Machine: Some CPU, 2 cores, Python 3.10.0. Date: 2020-01-02. Commit: abc1234. "
            "Command: `python benchmarks/train_bench.py --only digits`.") in first
    # every other section keeps the record it was measured with
    for name in ("fashion_mnist", "memory", "ablation", "throughput", "score_blocks"):
        assert report.provenance_line(res[name]["provenance"]) in first, name
    assert report.BENCHMARKS_MD.read_text().count("Date: 2020-01-02") == 1


def test_measuring_one_section_stamps_only_that_one(results, monkeypatch, capsys):
    from benchmarks import train_bench

    res = json.loads((results / "train.json").read_text())
    res["digits"] = _digits_section()
    (results / "train.json").write_text(json.dumps(res))
    new = _digits_section()
    del new["provenance"]
    monkeypatch.setattr(train_bench, "bench_ablation", lambda: pytest.fail("not asked for"))
    monkeypatch.setattr(train_bench, "bench_digits", lambda: new)
    monkeypatch.setattr(provenance, "git_rev", lambda: "fedcba9")
    monkeypatch.setattr(sys, "argv", [str(BENCH / "train_bench.py"), "--only", "digits"])
    train_bench.main()
    after = json.loads((results / "train.json").read_text())
    stamp = after["digits"]["provenance"]
    assert stamp["commit"] == "fedcba9" and stamp["date"] != OLD["date"]
    assert stamp["command"] == "python benchmarks/train_bench.py --only digits"
    assert stamp["machine"] == provenance.machine()
    for name in ("fashion_mnist", "memory", "ablation", "throughput", "score_blocks"):
        assert after[name]["provenance"] == res[name]["provenance"], name
    assert "date" not in after and "commit" not in after  # no file-wide stamp


def test_unknown_section_is_an_error(results, monkeypatch, capsys):
    from benchmarks import train_bench

    monkeypatch.setattr(sys, "argv", ["train_bench.py", "--only", "digits,memroy"])
    with pytest.raises(SystemExit) as exc:
        train_bench.main()
    assert exc.value.code == 2
    assert "unknown section(s) ['memroy']" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["export", "sim", "firmware", "ondevice_train",
                                  "ondevice_int8", "ondevice_adapt"])
def test_other_sections_render_from_their_stored_provenance(results, monkeypatch, name):
    import importlib

    module = importlib.import_module(f"benchmarks.{name}_bench")
    res = json.loads((results / f"{name}.json").read_text())
    res["provenance"] = {**OLD, "command": f"python benchmarks/{name}_bench.py"}
    (results / f"{name}.json").write_text(json.dumps(res))
    monkeypatch.setattr(provenance, "git_rev", lambda: "fedcba9")
    monkeypatch.setattr(sys, "argv", [f"{name}_bench.py", "--render"])
    module.main()
    module.main()
    text = (results / f"{name}.md").read_text()
    assert report.provenance_line(res["provenance"]) in text
    assert "fedcba9" not in text
    assert json.loads((results / f"{name}.json").read_text()) == res


def test_a_section_without_provenance_is_refused(results):
    with pytest.raises(ValueError, match="section 'sim' has no provenance record"):
        report.write_section("sim", {"numbers": 1}, ["## sim"])


def test_provenance_record_and_line():
    prov = provenance.provenance("python benchmarks/sim_bench.py " + str(provenance.ROOT / "x"))
    assert set(prov) == set(report.PROVENANCE_KEYS)
    assert prov["command"] == "python benchmarks/sim_bench.py x"
    assert report.provenance_line(None) == "Provenance not recorded."


def test_host_training_parts_keep_their_provenance(results, monkeypatch):
    from benchmarks import host_train_bench

    before = (results / "host_train.json").read_text()
    res = json.loads(before)
    monkeypatch.setattr(provenance, "git_rev", lambda: "fedcba9")
    monkeypatch.setattr(sys, "argv", ["host_train_bench.py", "--render"])
    host_train_bench.main()
    first = (results / "host_train.md").read_text()
    host_train_bench.main()
    assert (results / "host_train.md").read_text() == first
    assert (results / "host_train.json").read_text() == before
    for part in ("throughput", "epoch", "torchrun", "threads"):
        assert report.provenance_line(res[part]["provenance"]) in first, part
    assert "fedcba9" not in first


def test_only_changes_outside_the_benchmarks_outputs_make_a_tree_dirty(tmp_path, monkeypatch):
    import subprocess

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    for name in ("code.py", "BENCHMARKS.md", "benchmarks/results/x.json"):
        (tmp_path / name).write_text("a\n")
    git("init", "-q")
    git("-c", "user.name=t", "-c", "user.email=t@t", "add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x")
    monkeypatch.setattr(provenance, "ROOT", tmp_path)
    for name in ("BENCHMARKS.md", "benchmarks/results/x.json"):
        (tmp_path / name).write_text("b\n")  # what a multi-part run writes between parts
    assert not provenance.git_rev().endswith("-dirty")
    (tmp_path / "code.py").write_text("b\n")
    assert provenance.git_rev().endswith("-dirty")


def test_a_record_from_a_dirty_tree_says_so_where_it_is_rendered():
    clean = report.provenance_line({**OLD, "commit": "abc1234"})
    dirty = report.provenance_line({**OLD, "commit": "abc1234-dirty"})
    assert "uncommitted" not in clean
    assert "uncommitted changes to abc1234**: the code measured is not exactly" in dirty
