"""The accuracy benchmark: candidates never read the test split, the chosen candidate is the
best mean over all its seeds, and every verdict comes from the stored numbers."""

import copy
import json
from pathlib import Path

from benchmarks import accuracy_plan as ab
from benchmarks import report
from benchmarks.accuracy_render import render


def _summary(out: Path, name: str, val: float) -> None:
    run = out / "runs" / name
    run.mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps({"val_accuracy": {"multipass": val}}))


def test_candidates_are_validation_only_and_comparisons_read_test_once():
    runs = ab.side_by_side_runs(["data.data_dir=X"])
    for run in runs:
        assert run.test == (run.group == "schedules"), run.name
        assert run.overrides.count("data.data_dir=X") == 1
    assert len({r.name for r in runs}) == len(runs)


def test_the_best_mean_with_every_seed_is_chosen(tmp_path):
    fo = list(ab.CANDIDATES["fo"])
    for s in ab.SEEDS:
        _summary(tmp_path, f"{fo[0]}_seed{s}", 0.90)
        _summary(tmp_path, f"{fo[1]}_seed{s}", 0.91 if s else 0.80)  # mean 0.873
    _summary(tmp_path, f"{fo[2]}_seed0", 0.99)  # one seed only: not a candidate yet
    assert ab.best_candidate(tmp_path, "fo") == fo[0]
    assert ab.best_candidate(tmp_path, "bp") is None


def test_verdicts_follow_the_numbers():
    res = report.load_results("accuracy")
    text = "\n".join(render(res))
    assert "**missed** (93.74 %)" in text
    better = copy.deepcopy(res)
    for run in better["train"]["finals"].values():
        run["summary"]["test_accuracy"]["multipass"] = 0.95
    assert "**met** (95.00 %)" in "\n".join(render(better))
