"""Packaging: the base install carries no torch; the torch commands say what to install."""

from __future__ import annotations

import re
from importlib import metadata

import pytest

from ctxconv import launch

TORCH_SIDE = {"torch", "torchvision", "hydra-core", "scikit-learn"}


def _requirements(extra: str | None) -> set[str]:
    """Distribution names the installed metadata requires for ``extra`` (None: base)."""
    out = set()
    for req in metadata.requires("ctxconv") or []:
        spec, _, marker = req.partition(";")
        wanted = re.search(r'extra\s*==\s*"([^"]+)"', marker)
        if (wanted.group(1) if wanted else None) == extra:
            out.add(re.split(r"[<>=!~\[ ]", spec.strip(), maxsplit=1)[0].lower())
    return out


def test_base_install_has_no_torch_side():
    base = _requirements(None)
    assert "numpy" in base and not base & TORCH_SIDE


def test_train_extra_brings_what_the_launcher_checks():
    assert TORCH_SIDE <= _requirements("train")
    assert "ctxconv" in _requirements("dev")  # dev = ctxconv[train] + the test tools
    scripts = {e.name: e.value for e in metadata.entry_points(group="console_scripts")}
    assert scripts["ctxconv-train"] == "ctxconv.launch:train"
    assert scripts["ctxconv-export"] == "ctxconv.launch:export"


@pytest.mark.parametrize("command", [launch.train, launch.export])
def test_missing_extra_is_one_line_and_exit_2(command, monkeypatch, capsys):
    real = launch.importlib.util.find_spec
    monkeypatch.setattr(launch.importlib.util, "find_spec",
                        lambda name: None if name == "torch" else real(name))
    with pytest.raises(SystemExit) as exc:
        command()
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "(torch not installed)" in err
    assert 'pip install "ctxconv[train]"' in err
