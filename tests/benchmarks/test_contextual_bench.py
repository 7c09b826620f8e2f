"""The contextual benchmark: choices on validation only, finals of the chosen setting, and a
table whose derived figures (means, int8 gaps, MAC ratio) come from the stored numbers."""

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

import contextual_bench as cb  # noqa: E402


def _write_summary(out: Path, name: str, val: float, test: float | None = None) -> None:
    run = out / "runs" / name
    run.mkdir(parents=True)
    summary = {"val_accuracy": {"multipass": val},
               "test_accuracy": None if test is None else {"multipass": test}}
    (run / "summary.json").write_text(json.dumps(summary))


def test_the_best_validation_run_is_chosen_and_its_finals_drop_the_short_epochs(tmp_path):
    runs = [r for r in cb.ablation_runs() if r.group == "ablation_b"]
    assert runs and all(not r.test for r in cb.ablation_runs())  # ablations never read test
    for i, run in enumerate(runs):
        _write_summary(tmp_path, run.name, val=0.5 + (0.3 if i == 2 else 0.01 * i))
    chosen = cb.choose(tmp_path, runs)
    assert chosen is runs[2]
    finals = cb.finals("b", chosen)
    assert [f.seed for f in finals] == list(cb.SEEDS) and all(f.test for f in finals)
    assert all(not o.startswith("trainer.epochs=") for f in finals for o in f.overrides)
    assert set(chosen.overrides) - set(finals[0].overrides) == {
        f"trainer.epochs={cb.ABLATION_EPOCHS}"}
    assert cb.choose(tmp_path, [r for r in cb.ablation_runs() if r.group == "ablation_c"]) is None


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
        groups[g] = {"label": cb.LABELS[g], "seeds": seeds}
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
    text = "\n".join(cb.render(_res()))
    row_a = next(line for line in text.splitlines() if line.startswith("| (a)"))
    assert "| 91.00 ± 1.00 | 90.00, 91.00, 92.00 | 90.00 ± 1.00 | -1.00 |" in row_a
    row_c = next(line for line in text.splitlines() if line.startswith("| (c)"))
    assert "30.00 ± 0.00 (first 2,000 test images) | -15.00 |" in row_c  # vs float on them
    assert "**9.80x**" in text  # (b) multipass over (a) onepass
    assert "past 60.0 % on validation" in text


@pytest.mark.parametrize("missing", ["b", "c"])
def test_render_says_when_a_group_was_not_exported(missing):
    res = _res()
    for seed in res["groups"][missing]["seeds"].values():
        for key in ("sim_multipass", "int8_export_accuracy", "float_on_sim_images"):
            seed.pop(key, None)
        seed["export_error"] = ["error: something failed"]
    text = "\n".join(cb.render(res))
    assert "not exported: error: something failed" in text


def test_the_budget_group_chooses_among_last_block_placements_only(tmp_path):
    runs = cb.within_budget(cb.ablation_runs())
    assert runs and all("model.contextual=[false,false,true]" in r.overrides for r in runs)
    everything = [r for r in cb.ablation_runs() if r.group == "ablation_b"]
    for i, run in enumerate(everything):  # a richer placement scores best overall
        best = "model.contextual=[true,true,true]" in run.overrides
        _write_summary(tmp_path, run.name, val=0.9 if best else 0.5 + 0.01 * i)
    assert "model.contextual=[true,true,true]" in cb.choose(tmp_path, everything).overrides
    chosen = cb.choose(tmp_path, runs)
    assert chosen is max(runs, key=lambda r: everything.index(r))


def test_render_gives_the_budget_models_mac_ratio_and_where_it_was_trained():
    res = _res()
    res["groups"]["e"] = {"label": cb.LABELS["e"], "seeds": {
        str(s): _seed(0.92, 0.92, 0.92, 104) for s in range(3)}}
    res["side_by_side_provenance"] = [{"machine": "cpu box", "date": "d", "commit": "abc",
                                       "command": "python x", "runs": ["e_seed0"]}]
    text = "\n".join(cb.render(res))
    assert "**1.04x** the context-free model" in text
    assert "Against (b): +1.00 points for 9.4x fewer MACs." in text
    assert "Trained later, side by side (e_seed0): Machine: cpu box." in text


def test_render_weighs_the_defaults_augmentation_against_its_seed_0():
    res = _res()
    for seed in res["groups"]["a"]["seeds"].values():
        seed["float_val"] = {"multipass": 0.937}
    res["ablation"].append({"name": "abl_a_flip", "group": "ablation_a",
                            "overrides": ["trainer.flip=true"], "val": 0.9345})
    text = "\n".join(cb.render(res))
    assert "| a_seed0 | ablation_a | `default` | 93.70 |" in text
    assert "| abl_a_flip | ablation_a | `trainer.flip=true` | 93.45 |" in text
    assert "reaches 93.45 % against the default's 93.70 % (-0.25 points" in text
    assert "the default is kept" in text


def test_the_official_classifier_is_its_own_group_weighed_against_c():
    runs = [r for r in cb.ablation_runs() if r.group == "ablation_f"]
    assert runs and all("trainer.objective=[bce,bce,softmax]" in r.overrides for r in runs)
    res = _res()
    res["ablation"] += [{"name": "abl_c_classifier_gap", "group": "ablation_f",
                         "overrides": [], "val": 0.71},
                        {"name": "abl_c_classifier_grid7", "group": "ablation_f",
                         "overrides": [], "val": 0.83}]
    text = "\n".join(cb.render(res))
    assert "past 60.0 % on validation" in text  # (c)'s best stays (c)'s own
    assert ("`abl_c_classifier_grid7` 83.00 %, `abl_c_classifier_gap` 71.00 %, against "
            "60.0 % for the energy goodness in every block (c)") in text
    assert "--finals f=abl_c_classifier_grid7`) are not trained yet" in text
    assert "Batch norm in place" not in text
    res["ablation"].append({"name": "abl_c_classifier_grid7_batchnorm", "group": "ablation_f",
                            "overrides": [], "val": 0.9})
    text = "\n".join(cb.render(res))
    assert "Batch norm in place of the L2 normalisation: +7.00 points." in text
    assert "--finals f=abl_c_classifier_grid7_batchnorm`) are not trained yet" in text
    res["groups"]["f"] = {"label": cb.LABELS["f"], "seeds": {
        str(s): _seed(0.88 + 0.01 * s, 0.8, 0.88, 990) for s in range(3)}}
    text = "\n".join(cb.render(res))
    assert "Three seeds of it at the full epochs: 89.00 % on the test split." in text
    assert "not trained yet" not in text


def test_a_setting_replaces_the_base_value_of_its_key_where_hydra_would():
    assert cb.overridden(["model.norm=l2", "model.x=1"], ["model.norm=batch"]) == [
        "model.x=1", "model.norm=batch"]
    for run in cb.ablation_runs():  # every key once, so the table shows what ran
        keys = [o.split("=", 1)[0] for o in run.overrides]
        assert len(keys) == len(set(keys)), run.name
