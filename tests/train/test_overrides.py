"""Override keys checked against the schema; resume reads the run's stored config."""

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from ctxconv.train.config import TrainAppConfig, register_configs
from ctxconv.train.overrides import OverrideError, check_group_choices, check_override_keys
from ctxconv.train.resume_config import group_values, resume_config


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("+trainer.epoch=3", "unknown key 'trainer.epoch' in override '+trainer.epoch=3': the "
         "ctxconv-train config has no such field (a leading + cannot add one); did you mean "
         "'trainer.epochs'?"),
        ("++trainer.epoch=3", "(a leading + cannot add one); did you mean 'trainer.epochs'?"),
        ("trainer.epochz=3", "no such field; did you mean 'trainer.epochs'?"),
        ("epochs=3", "unknown key 'epochs'"),
        ("~model.blockz", "did you mean 'model.blocks'?"),
        ("+zzz.qqq=1", "no such field (a leading + cannot add one); see ctxconv-train --help"),
    ],
)
def test_unknown_keys_are_errors_with_or_without_plus(override, message):
    with pytest.raises(OverrideError) as err:
        check_override_keys([override], TrainAppConfig)
    assert message in str(err.value)


def test_an_option_in_a_group_folder_is_named_by_its_path():
    check_group_choices(["experiment=contextual/f_bce", "experiment=fashion_mnist"])
    with pytest.raises(OverrideError, match="did you mean contextual/f_bce"):
        check_group_choices(["experiment=contextual/f_bc"])


def test_known_keys_groups_and_hydra_keys_pass():
    check_override_keys(["trainer.epochs=3", "+model.blocks=[[1,4,3]]", "data=fashion_mnist",
                         "experiment=fashion_mnist", "hydra.run.dir=x", "model.blocks.0=[1,2,3]",
                         "hydra/job_logging=disabled", "resume=true"], TrainAppConfig)


def _compose(overrides):
    register_configs()
    with initialize_config_module("ctxconv.configs", version_base=None):
        return compose("train", overrides=overrides)


@pytest.fixture()
def stored_run(tmp_path):
    """A run directory whose config.yaml has non-default blocks and epochs."""
    cfg = _compose(["model.blocks=[[1,4,3],[2,4,3]]", "trainer.epochs=1"])
    cfg.data.num_classes = 10  # filled in by the run
    OmegaConf.save(cfg, tmp_path / "config.yaml")
    return tmp_path


def test_resume_reads_the_stored_config(stored_run):
    overrides = ["resume=true", "trainer.progress=false", "threads=1"]
    cfg = resume_config(_compose(overrides), stored_run, overrides)
    assert cfg.model.blocks == [[1, 4, 3], [2, 4, 3]] and cfg.trainer.epochs == 1
    assert cfg.trainer.progress is False and cfg.threads == 1 and cfg.resume is True
    assert isinstance(OmegaConf.to_object(cfg), TrainAppConfig)
    repeated = ["resume=true", "model.blocks=[[1,4,3],[2,4,3]]", "data=digits"]
    assert resume_config(_compose(repeated), stored_run, repeated).trainer.epochs == 1


def test_only_contradicting_overrides_are_errors(stored_run):
    overrides = ["resume=true", "trainer.epochs=5", "model.blocks=[[1,4,3],[2,4,3]]"]
    with pytest.raises(OverrideError, match=r"cannot resume .*: 'trainer.epochs=5' sets "
                                            r"trainer.epochs=5 but the run has trainer.epochs=1 "
                                            r"\(its config.yaml\)"):
        resume_config(_compose(overrides), stored_run, overrides)
    overrides = ["resume=true", "experiment=fashion_mnist"]
    with pytest.raises(OverrideError, match="'experiment=fashion_mnist' sets data.dataset="
                                            "'fashion_mnist' but the run has data.dataset="
                                            "'digits'"):
        resume_config(_compose(overrides), stored_run, overrides)


def test_group_values_follow_experiment_defaults():
    values = dict(group_values("experiment", "fashion_mnist"))
    assert values["data.dataset"] == "fashion_mnist" and "model.blocks" in values


def test_group_values_of_an_experiment_built_on_others_are_its_composed_values():
    values = dict(group_values("experiment", "contextual/f_softmax_e10"))
    cfg = _compose(["experiment=contextual/f_softmax_e10"])
    assert values["model.norm"] == "batch" and values["model.goodness"] == ["energy", "energy",
                                                                            "linear"]
    assert values["trainer.epochs"] == 10 and values["data.dataset"] == "fashion_mnist"
    for key, value in values.items():
        node = OmegaConf.select(cfg, key)
        assert (OmegaConf.to_container(node) if OmegaConf.is_config(node) else node) == value, key
