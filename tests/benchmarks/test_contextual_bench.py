"""The contextual benchmark: choices on validation only, finals of the chosen setting, and a
table whose derived figures (means, int8 gaps, MAC ratio) come from the stored numbers."""

import json
from pathlib import Path

import pytest

from benchmarks import contextual_bench as cb
from benchmarks import contextual_plan as plan
from benchmarks.contextual_render import render
from benchmarks.runner import compose_train, overridden


def _composed(run) -> dict:
    """The config ``ctxconv-train`` composes for a run of the plan."""
    return compose_train([f"experiment={run.experiment}", *run.overrides])


def _write_summary(out: Path, name: str, val: float, test: float | None = None) -> None:
    run = out / "runs" / name
    run.mkdir(parents=True)
    summary = {"val_accuracy": {"multipass": val},
               "test_accuracy": None if test is None else {"multipass": test}}
    (run / "summary.json").write_text(json.dumps(summary))


def test_the_best_validation_run_is_chosen_and_its_finals_drop_the_short_epochs(tmp_path):
    runs = [r for r in plan.ablation_runs() if r.group == "ablation_b"]
    assert runs and all(not r.test for r in plan.ablation_runs())  # ablations never read test
    for i, run in enumerate(runs):
        _write_summary(tmp_path, run.name, val=0.5 + (0.3 if i == 2 else 0.01 * i))
    chosen = plan.choose(tmp_path, runs)
    assert chosen is runs[2]
    finals = plan.finals("b", chosen)
    assert [f.seed for f in finals] == list(plan.SEEDS) and all(f.test for f in finals)
    assert all(not o.startswith("trainer.epochs=") for f in finals for o in f.overrides)
    assert set(chosen.overrides) - set(finals[0].overrides) == {
        f"trainer.epochs={plan.ABLATION_EPOCHS}"}
    c_runs = [r for r in plan.ablation_runs() if r.group == "ablation_c"]
    assert plan.choose(tmp_path, c_runs) is None


def _seed(test: float, int8: float, float_export: float, macs: int, images: int = 10_000,
          subset_float: float | None = None) -> dict:
    row = {"float_test": {"multipass": test}, "params": 1000,
           "int8_export_accuracy": {"float_multipass": float_export},
           "sim_multipass": {"accuracy": int8, "macs": macs, "latency_ms": 10.0,
                             "sram_bytes": 2048, "images": images}}
    if subset_float is not None:
        row["float_on_sim_images"] = subset_float
    return row


def _res() -> dict:
    groups = {}
    for g, macs in zip("abcd", (100, 980, 990, 100), strict=True):
        seeds = {str(s): _seed(0.90 + 0.01 * s, 0.89 + 0.01 * s, 0.90 + 0.01 * s, macs)
                 for s in range(3)}
        groups[g] = {"label": plan.LABELS[g], "seeds": seeds}
    for s in range(3):
        groups["c"]["seeds"][str(s)] = _seed(0.5, 0.3, 0.5, 990, images=2000,
                                             subset_float=0.45)
    for seed in groups["a"]["seeds"].values():
        seed["sim_onepass"] = dict(seed["sim_multipass"])
    prov = {"machine": "m", "date": "d", "commit": "c", "command": "x"}
    return {"provenance": prov, "evaluation_provenance": prov, "groups": groups,
            "ablation": [{"name": "abl_c_x", "group": "ablation_c", "overrides": [],
                          "val": 0.6}], "selected": {"b": "abl_b", "c": "abl_c_x"},
            "ablation_epochs": 2}


def test_render_computes_means_gaps_and_the_mac_ratio():
    text = "\n".join(render(_res()))
    row_a = next(line for line in text.splitlines() if line.startswith("| (a)"))
    assert "| 91.00 ± 1.00 | 90.00, 91.00, 92.00 | 90.00 ± 1.00 | -1.00 |" in row_a
    row_c = next(line for line in text.splitlines() if line.startswith("| (c)"))
    assert "30.00 ± 0.00 (first 2,000 test images) | -15.00 |" in row_c  # vs float on them
    assert "**9.80x**" in text  # (b) multipass over (a) onepass
    assert "past 60.0 % on validation" in text


def test_a_group_simulated_on_a_subset_also_gets_the_exports_whole_split_int8():
    res = _res()
    for s, row in res["groups"]["b"]["seeds"].items():
        row["sim_multipass"]["images"] = 2000
        row["float_on_sim_images"] = 0.9
        row["int8_export_accuracy"] = {"float_multipass": 0.91,
                                       "int8_multipass": 0.90 + 0.01 * int(s)}
    text = "\n".join(render(res))
    assert ("(b) on the whole test split, int8 as the export measures it (the ONNX graphs under "
            "onnxruntime, checked against TFLM): 91.00 ± 1.00 % against float 91.00 % (+0.00 "
            "points).") in text
    assert "(a) on the whole test split" not in text  # simulated on all of it
    res["groups"]["b"]["seeds"]["0"]["verification_failures"] = ["block0: differs"]
    assert "(b) on the whole test split" not in "\n".join(render(res))


@pytest.mark.parametrize("missing", ["b", "c"])
def test_render_says_when_a_group_was_not_exported(missing):
    res = _res()
    for seed in res["groups"][missing]["seeds"].values():
        for key in ("sim_multipass", "int8_export_accuracy", "float_on_sim_images"):
            seed.pop(key, None)
        seed["export_error"] = ["error: something failed"]
    text = "\n".join(render(res))
    assert "not exported: error: something failed" in text


def test_the_budget_group_chooses_among_last_block_placements_only(tmp_path):
    runs = plan.within_budget(plan.ablation_runs())
    assert runs and all("model.contextual=[false,false,true]" in r.overrides for r in runs)
    everything = [r for r in plan.ablation_runs() if r.group == "ablation_b"]
    for i, run in enumerate(everything):  # a richer placement scores best overall
        best = "model.contextual=[true,true,true]" in run.overrides
        _write_summary(tmp_path, run.name, val=0.9 if best else 0.5 + 0.01 * i)
    assert "model.contextual=[true,true,true]" in plan.choose(tmp_path, everything).overrides
    chosen = plan.choose(tmp_path, runs)
    assert chosen is max(runs, key=lambda r: everything.index(r))


def test_render_gives_the_budget_models_mac_ratio_and_where_it_was_trained():
    res = _res()
    res["groups"]["e"] = {"label": plan.LABELS["e"], "seeds": {
        str(s): _seed(0.92, 0.92, 0.92, 104) for s in range(3)}}
    res["side_by_side_provenance"] = [{"machine": "cpu box", "date": "d", "commit": "abc",
                                       "command": "python x", "runs": ["e_seed0"]}]
    text = "\n".join(render(res))
    assert "**1.04x** the context-free model" in text
    assert "Against (b): +1.00 points for 9.4x fewer MACs." in text
    assert "Trained later, side by side (e_seed0): Machine: cpu box." in text


def test_render_weighs_the_defaults_augmentation_against_its_seed_0():
    res = _res()
    for seed in res["groups"]["a"]["seeds"].values():
        seed["float_val"] = {"multipass": 0.937}
    res["ablation"].append({"name": "abl_a_flip", "group": "ablation_a",
                            "overrides": ["trainer.flip=true"], "val": 0.9345})
    text = "\n".join(render(res))
    assert "| a_seed0 | ablation_a | `default` | 93.70 |" in text
    assert "| abl_a_flip | ablation_a | `trainer.flip=true` | 93.45 |" in text
    assert "reaches 93.45 % against the default's 93.70 % (-0.25 points" in text
    assert "the default is kept" in text


def test_the_official_classifier_is_its_own_group_weighed_against_c():
    runs = [r for r in plan.ablation_runs() if r.group == "ablation_f"]
    assert runs and all(r.experiment == plan.OFFICIAL_CLASSIFIER for r in runs)
    assert _composed(runs[0]).trainer.objective == ["bce", "bce", "softmax"]
    res = _res()
    res["ablation"] += [{"name": "abl_c_classifier_gap", "group": "ablation_f",
                         "overrides": [], "val": 0.71},
                        {"name": "abl_c_classifier_grid7", "group": "ablation_f",
                         "overrides": [], "val": 0.83}]
    text = "\n".join(render(res))
    assert "past 60.0 % on validation" in text  # (c)'s best stays (c)'s own
    assert ("`abl_c_classifier_grid7` 83.00 %, `abl_c_classifier_gap` 71.00 %, against "
            "60.0 % for the energy goodness in every block (c)") in text
    assert "train --candidates f`, then `select --groups f`) are not trained yet" in text
    assert "Batch norm in place" not in text
    res["ablation"].append({"name": "abl_c_classifier_grid7_batchnorm", "group": "ablation_f",
                            "overrides": [], "val": 0.9})
    text = "\n".join(render(res))
    assert "Batch norm in place of the L2 normalisation: +7.00 points." in text
    res["groups"]["f"] = {"label": plan.LABELS["f"], "seeds": {
        str(s): _seed(0.89 + 0.01 * s, 0.8, 0.88, 990) for s in range(3)}}
    res["candidates"] = {"f": {"f_bce": {"val": [0.88, 0.88, 0.89], "overrides": ["x=1"]},
                               "f_softmax": {"val": [0.9, 0.89, 0.9], "overrides": ["y=2"]}}}
    res["selected"]["f"] = "cand_f_softmax"
    text = "\n".join(render(res))
    assert ("`f_softmax` 89.67 %, `f_bce` 88.33 % (mean); `f_softmax` is (f): 90.00 ± 1.00 % on "
            "the test split (the (c) target, 90 %: met, +0.00 points)") in text
    assert "not trained yet" not in text
    res["superseded"] = {"f": {"candidate": "f_bce", "why": "w", "test": [0.88, 0.88, 0.88]}}
    assert ("`f_bce` had been chosen and its test split read (88.00 ± 0.00 %) before "
            "`f_softmax` was trained") in "\n".join(render(res))
    assert "| (f) | `f_softmax` (chosen) | `y=2` | 90.00, 89.00, 90.00 | 89.67 ± 0.58 |" in text
    assert text.index("`f_softmax` (chosen)") < text.index("| (f) | `f_bce` |")
    chosen = next(line for line in text.splitlines() if "Chosen:" in line)
    assert "cand_" not in chosen  # a candidate's choice is the candidates table's, not this


def test_a_setting_replaces_the_base_value_of_its_key_where_hydra_would():
    assert overridden(["model.norm=l2", "model.x=1"], ["model.norm=batch"]) == [
        "model.x=1", "model.norm=batch"]
    for run in plan.ablation_runs():  # every key once, so the table shows what ran
        keys = [o.split("=", 1)[0] for o in run.overrides]
        assert len(keys) == len(set(keys)), run.name


def test_candidates_train_every_seed_on_validation_with_named_settings_expanded():
    runs = plan.candidate_runs("fgh")
    names = {r.name for r in runs}
    assert len(runs) == len(names) == sum(map(len, plan.CANDIDATES.values())) * len(plan.SEEDS)
    assert all(not r.test for r in runs)  # a candidate never reads the test split
    assert all(not r.overrides and r.experiment.startswith("contextual/") for r in runs)
    bce = next(r for r in runs if r.name == "cand_f_bce_seed1")
    chosen = next(r for r in plan.ablation_runs() if r.name == plan.F_CHOSEN)
    assert bce.seed == 1 and _composed(bce) == _composed(plan.finals("f", chosen)[0])
    soft = next(r for r in runs if r.name == "cand_f_softmax_seed0")
    assert _composed(soft).trainer.objective == ["softmax"] * 3
    assert plan.candidate_runs("a") == []
    assert [r.name for r in plan.candidate_runs("g_e20_flip,h_e20")] == [
        *(f"cand_g_e20_flip_seed{s}" for s in plan.SEEDS),
        *(f"cand_h_e20_seed{s}" for s in plan.SEEDS)]


def test_select_takes_the_best_mean_and_reads_only_its_test_split(tmp_path, monkeypatch):
    """The best seed 0 is not the best mean: the mean decides; only its runs are tested."""
    vals = {"g_e20": [0.95, 0.90, 0.90], "g_e20_flip": [0.93, 0.93, 0.93],
            "g_e20_wide_flip": [0.92, 0.92, 0.92]}
    for name, per_seed in vals.items():
        for seed, v in enumerate(per_seed):
            _write_summary(tmp_path, f"cand_{name}_seed{seed}", val=v)
    (tmp_path / "results_candidates.json").write_text(json.dumps({"device": "cuda"}))
    commands = []

    def fake_sh(cmd, log):  # what ctxconv-train resume=true evaluate_test=true writes
        commands.append(cmd)
        run_dir = Path(next(c for c in cmd if c.startswith("hydra.run.dir=")).split("=", 1)[1])
        summary = json.loads((run_dir / "summary.json").read_text())
        summary["test_accuracy"] = {"multipass": 0.5}
        (run_dir / "summary.json").write_text(json.dumps(summary))
        return 0, 1.0

    monkeypatch.setattr(cb, "sh", fake_sh)
    res = cb.select(tmp_path, "gh", "cpu")
    assert res["selected"] == {"g": "cand_g_e20_flip"}  # (h) has no trained candidate
    assert len(commands) == 3 and all("resume=true" in c and "evaluate_test=true" in c
                                      and "trainer.device=cpu" in c for c in commands)
    for seed in plan.SEEDS:
        run = res["runs"][f"g_seed{seed}"]
        assert run["selected_from"] == f"cand_g_e20_flip_seed{seed}"
        assert run["summary"]["val_accuracy"]["multipass"] == 0.93
        assert run["summary"]["test_accuracy"] == {"multipass": 0.5}
        untouched = json.loads((tmp_path / "runs" / f"cand_g_e20_flip_seed{seed}" /
                                "summary.json").read_text())
        assert untouched["test_accuracy"] is None  # the candidate's own folder stays as trained
    assert json.loads((tmp_path / "results_select.json").read_text())["candidates"]["g"] == vals
    with pytest.raises(SystemExit, match="g_seed0 exists"):
        cb.select(tmp_path, "g", "cpu")


def test_render_weighs_the_longer_default_against_the_stretch_and_backprop():
    res = _res()
    res["groups"]["g"] = {"label": plan.LABELS["g"], "seeds": {
        str(s): _seed(0.938 + 0.001 * s, 0.93, 0.93, 100) for s in range(3)}}
    res["groups"]["g"]["seeds"]["0"]["sim_onepass"] = {
        "accuracy": 0.93, "macs": 100, "latency_ms": 1.0, "sram_bytes": 1, "images": 10_000,
        "flash_bytes": 900 * 1024, "fits": True}
    res["groups"]["h"] = {"label": plan.LABELS["h"], "seeds": {
        str(s): _seed(0.936, 0.93, 0.93, 100) for s in range(3)}}
    res["candidates"] = {"g": {"g_e20": {"val": [0.93] * 3, "overrides": []},
                               "g_e20_flip": {"val": [0.936] * 3, "overrides": []}}}
    text = "\n".join(render(res))
    assert ("`g_e20_flip` chosen on validation reaches 93.90 ± 0.10 % on the test split "
            "(stretch target 94 %: missed; (a) at 6 epochs: 91.00 %, +2.90 points)") in text
    assert "takes 900 KB of flash (weights target <= 1 MB: met; nRF52840 verdict FITS)" in text
    assert "`g_e20` 93.00 % mean validation, against 93.60 % for `g_e20_flip`" in text
    assert "(h): 93.60 %; (g) - (h) = +0.30 points" in text
    res["groups"]["g"]["seeds"]["0"]["float_test"]["multipass"] = 0.944
    assert "stretch target 94 %: met" in "\n".join(render(res))


def test_a_failed_check_names_only_the_runtimes_its_failures_name():
    from benchmarks.contextual_render import failing_runtimes

    onnx_only = ["block0: onnxruntime differs from litert_ref by 28 LSB (limit 3)",
                 "multipass: onnxruntime top-1 agreement 0.8700 < 0.99"]
    assert failing_runtimes(onnx_only).startswith("the failures name onnxruntime only")
    both = [*onnx_only, "block1: tflm differs from litert_ref by 2 LSB (limit 1)"]
    text = failing_runtimes(both)
    assert text == "the failures name onnxruntime, tflm" and "no failure" not in text
