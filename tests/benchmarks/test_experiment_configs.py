"""The benchmarks' named experiments (``ctxconv/configs/experiment/``): each composes with
``ctxconv-train``'s config, and a run of the plan by name composes to exactly the config of
the run the results record (``experiment=fashion_mnist`` and the overrides it was given before
the experiments had names), so a run by name repeats the measured one."""

from __future__ import annotations

import shlex
from functools import cache
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import ctxconv.configs
from benchmarks import accuracy_plan, contextual_plan, report
from benchmarks.runner import DEFAULT_EXPERIMENT, Run, compose_train, experiment_settings
from ctxconv.train.config import TrainAppConfig
from ctxconv.train.overrides import check_group_choices

EXPERIMENTS = Path(ctxconv.configs.__file__).parent / "experiment"
NAMES = sorted(p.relative_to(EXPERIMENTS).with_suffix("").as_posix()
               for p in EXPERIMENTS.rglob("*.yaml"))
#: what the accuracy runs were given beside their settings
ACCURACY_EXTRA = ["data.data_dir=.data/fashion-mnist"]


@cache
def _config(overrides: tuple[str, ...]) -> dict:
    return OmegaConf.to_container(compose_train(list(overrides)))


def _by_name(run: Run) -> dict:
    return _config((f"experiment={run.experiment}", *run.overrides))


def _as_recorded(overrides: list[str]) -> dict:
    return _config((f"experiment={DEFAULT_EXPERIMENT}", *overrides))


def _differences(plan: dict[str, Run], recorded: dict[str, list[str]]) -> list[str]:
    missing = sorted(set(recorded) - set(plan))
    assert not missing, f"recorded runs the plan no longer has: {missing}"
    return [name for name, overrides in recorded.items()
            if _by_name(plan[name]) != _as_recorded(overrides)]


@pytest.mark.parametrize("name", NAMES)
def test_every_named_experiment_composes_against_the_schema(name):
    check_group_choices([f"experiment={name}"])  # ctxconv-train takes its name
    cfg = compose_train([f"experiment={name}"])
    assert isinstance(OmegaConf.to_object(cfg), TrainAppConfig)
    assert cfg.data.dataset == "fashion_mnist"
    # the settings a record shows for it stand for the same config
    assert _as_recorded(experiment_settings(name)) == _config((f"experiment={name}",))


def test_every_experiment_the_benchmarks_name_exists():
    named = {r.experiment for r in [
        *contextual_plan.exclusive_runs(), *contextual_plan.seed_runs(),
        *contextual_plan.ablation_runs(), *contextual_plan.candidate_runs("fgh"),
        *accuracy_plan.side_by_side_runs([]), *accuracy_plan.timed_runs([])]}
    assert named <= set(NAMES), sorted(named - set(NAMES))


def _contextual_plan() -> dict[str, Run]:
    """Every run of the contextual plan by name, the finals of the recorded choices too."""
    runs = {r.name: r for r in [
        *contextual_plan.exclusive_runs(), *contextual_plan.seed_runs(),
        *contextual_plan.ablation_runs(), *contextual_plan.candidate_runs("fgh")]}
    for group, chosen in report.load_results("contextual")["selected"].items():
        for seed in contextual_plan.SEEDS:
            if chosen.startswith("cand_"):  # a candidate's folder, its test split read
                runs[f"{group}_seed{seed}"] = runs[f"{chosen}_seed{seed}"]
        if not chosen.startswith("cand_"):
            runs.update({r.name: r for r in contextual_plan.finals(group, runs[chosen])})
    return runs


def _contextual_recorded() -> dict[str, list[str]]:
    """The overrides of every run contextual.json records: ablations, candidates, finals."""
    res = report.load_results("contextual")
    runs = {r["name"]: r["overrides"] for r in res["ablation"]}
    for cands in res["candidates"].values():
        runs.update({f"cand_{n}_seed0": c["overrides"] for n, c in cands.items()})
    for group, g in res["groups"].items():
        for seed, row in g["seeds"].items():
            words = shlex.split(row["command"])
            assert words[:3] == ["ctxconv-train", "experiment=fashion_mnist",
                                 "trainer.progress=false"], row["command"]
            assert words[-2] == f"seed={seed}" and words[-1].startswith("trainer.device=")
            runs[f"{group}_seed{seed}"] = words[3:-2]
    return runs


def test_a_contextual_run_by_name_is_the_run_recorded():
    recorded = _contextual_recorded()
    assert len(recorded) >= 50  # 24 ablations, 8 candidates, 8 groups x 3 seeds
    assert _differences(_contextual_plan(), recorded) == []


def test_an_accuracy_run_by_name_is_the_run_recorded():
    phases = report.load_results("accuracy")["train"]["phases"]
    recorded = {n: r["overrides"] for p in ("timed", "side_by_side") for n, r in phases[p].items()}
    plan = {r.name: r for r in [*accuracy_plan.timed_runs(ACCURACY_EXTRA),
                                *accuracy_plan.side_by_side_runs(ACCURACY_EXTRA)]}
    assert len(recorded) == len(plan) == 30
    assert _differences(plan, recorded) == []


def test_the_recorded_candidates_are_their_named_experiments():
    candidates = report.load_results("accuracy")["train"]["candidates"]
    assert {g: list(c) for g, c in candidates.items()} == accuracy_plan.CANDIDATES
    for cands in candidates.values():
        for name, overrides in cands.items():
            assert _config((f"experiment=accuracy/{name}",)) == _as_recorded(overrides), name


def test_a_wrong_value_in_an_experiment_is_a_difference():
    plan = {r.name: r for r in contextual_plan.ablation_runs()}
    recorded = {"abl_c_bias_lr2e-3": ["trainer.epochs=2", "model.contextual=[true,false,false]",
                                      "model.goodness=energy", "model.norm=batch",
                                      "trainer.objective=bce", "model.injection=bias",
                                      "trainer.lr=2e-3"]}
    assert _differences(plan, recorded) == ["abl_c_bias_lr2e-3"]
