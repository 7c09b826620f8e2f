"""Command-line overrides of ``ctxconv-train`` checked against the config schema.

Hydra rejects an unknown key, but ``+key=value`` (its own suggestion) adds it, and the
key is then silently dropped when the config becomes a dataclass. Here every key, with
or without ``+``/``++``/``~``, must name a field of ``TrainAppConfig``, and a close
field is suggested.
"""

from __future__ import annotations

import difflib
import typing
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override

GROUPS = ("data", "model", "trainer", "experiment")  # config groups of ctxconv-train
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


class OverrideError(ValueError):
    """An override names a key that the config does not have, or contradicts a stored run."""


def parse_overrides(overrides: list[str]) -> list[Override]:
    """Hydra's own parsing (errors in the syntax are left for Hydra to report)."""
    try:
        return OverridesParser.create().parse_overrides(overrides)
    except Exception:
        return []


def is_hydra_key(key: str) -> bool:
    return key == "hydra" or key.startswith(("hydra.", "hydra/"))


def is_group_choice(o: Override) -> bool:
    """``data=digits``, ``experiment=fashion_mnist``: picks a file of a config group."""
    return o.key_or_group in GROUPS and not o.is_delete()


def _fields(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls)}


def leaf_paths(cls: type, prefix: str = "") -> list[str]:
    """Every dotted key of a (nested) dataclass config."""
    out = []
    for name, tp in _fields(cls).items():
        path = f"{prefix}{name}"
        out += leaf_paths(tp, path + ".") if is_dataclass(tp) else [path]
    return out


def suggest(key: str, schema: type) -> str | None:
    """The closest existing key, by the whole path or by its last part."""
    paths = leaf_paths(schema)
    close = difflib.get_close_matches(key, paths, n=1, cutoff=0.6)
    if close:
        return close[0]
    tails = {p.rsplit(".", 1)[-1]: p for p in paths}
    close = difflib.get_close_matches(key.rsplit(".", 1)[-1], list(tails), n=1, cutoff=0.75)
    return tails[close[0]] if close else None


def unknown_key(key: str, schema: type) -> bool:
    """True when ``key`` does not name a field (a key inside a list/dict field is accepted)."""
    cls: Any = schema
    for part in key.split("."):
        if not (isinstance(cls, type) and is_dataclass(cls)):
            return False  # below a leaf field (e.g. an element of model.blocks)
        known = _fields(cls)
        if part not in known:
            return True
        cls = known[part]
    return False


def check_override_keys(overrides: list[str], schema: type) -> None:
    """Raise OverrideError for the first override whose key is not in ``schema``."""
    for o in parse_overrides(overrides):
        key = o.key_or_group
        if is_hydra_key(key) or is_group_choice(o) or not unknown_key(key, schema):
            continue
        hint = suggest(key, schema)
        plus = " (a leading + cannot add one)" if o.is_add() or o.is_force_add() else ""
        raise OverrideError(
            f"unknown key '{key}' in override '{o.input_line}': the ctxconv-train config has "
            f"no such field{plus}"
            + (f"; did you mean '{hint}'?" if hint else "; see ctxconv-train --help")
        )


def check_group_choices(overrides: list[str], config_dir: Path = CONFIG_DIR) -> None:
    """Raise OverrideError for ``GROUP=OPTION`` naming no file of that group (with a hint)."""
    for o in parse_overrides(overrides):
        if not is_group_choice(o) or o.value() is None or not isinstance(o.value(), str):
            continue
        option = o.value()
        group = config_dir / o.key_or_group  # an option may sit in a folder: contextual/f_bce
        options = sorted(p.relative_to(group).with_suffix("").as_posix()
                         for p in group.rglob("*.yaml"))
        if option in options:
            continue
        close = difflib.get_close_matches(option, options, n=1, cutoff=0.6)
        close = close or [c for c in options if c.startswith(option)][:1]
        raise OverrideError(
            f"unknown {o.key_or_group} option '{option}' in override '{o.input_line}': choose "
            f"one of {', '.join(options)}" + (f"; did you mean {close[0]}?" if close else "")
        )


def check_run_dir(overrides: list[str]) -> None:
    """Raise OverrideError when ``hydra.run.dir`` (or a folder above it) is not a directory."""
    for o in parse_overrides(overrides):
        if o.key_or_group != "hydra.run.dir" or not isinstance(o.value(), str):
            continue
        path = Path(o.value())
        for p in (path, *path.parents):
            if p.exists():
                if not p.is_dir():
                    raise OverrideError(
                        f"hydra.run.dir={path}: {p} is a file, not a directory; choose "
                        "another hydra.run.dir")
                break


def check_override_values(overrides: list[str], schema: type) -> None:
    """Raise OverrideError for a value the schema's type cannot hold (``trainer.lr=fast``)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    cfg = OmegaConf.structured(schema)
    for o in parse_overrides(overrides):
        key = o.key_or_group
        if is_hydra_key(key) or is_group_choice(o) or o.is_delete() or unknown_key(key, schema):
            continue
        try:
            OmegaConf.update(cfg, key, o.value(), merge=True)
        except (OmegaConfBaseException, ValueError) as exc:
            raise OverrideError(f"override '{o.input_line}': {str(exc).splitlines()[0]}") from None
