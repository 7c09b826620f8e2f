"""The package layout as a test: every module of every room, walked, not listed.

Rooms in dependency order (a room imports only rooms above it):

    cli_errors, progress, workdirs, blockgraph, memory, runtimes, codegen, sim, ondevice,
    predict, train, export, configs, launch

``export`` reads checkpoints through ``train`` (the model and its loading), so it comes
after it; ``launch`` holds the entry points of the torch commands. Only ``train`` and
``export`` may load torch; nothing in ``ctxconv`` imports ``benchmarks``.
"""

from __future__ import annotations

import ast
import importlib.util
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import ctxconv

ROOMS = ("cli_errors", "progress", "workdirs", "blockgraph", "memory", "runtimes", "codegen",
         "sim", "ondevice", "predict", "train", "export", "configs", "launch")
TORCH_ROOMS = ("train", "export")
PACKAGE_DIR = Path(ctxconv.__file__).parent


def _modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(ctxconv.__path__, "ctxconv."))


def _room(module: str) -> str:
    return module.split(".")[1]


def _source(module: str) -> str:
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin, module
    return Path(spec.origin).read_text()


def _imports(module: str) -> list[tuple[int, str]]:
    """(line, imported module) for every import statement, wherever it stands."""
    out = []
    for node in ast.walk(ast.parse(_source(module))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert not node.level, f"{module}:{node.lineno}: use absolute imports"
            out.append((node.lineno, node.module or ""))
    return out


def layering_violations(imports: dict[str, list[tuple[int, str]]]) -> list[str]:
    """Every import of a module against the room order, or of ``benchmarks``."""
    bad = []
    for module, found in imports.items():
        room = _room(module)
        for line, name in found:
            top = name.split(".")[0]
            if top == "benchmarks":
                bad.append(f"{module}:{line} imports {name} (nothing imports benchmarks)")
            if top == "torch" and room not in TORCH_ROOMS:
                bad.append(f"{module}:{line} imports torch in the torch-free room {room!r}")
            if top != "ctxconv" or name == "ctxconv":
                continue
            other = name.split(".")[1]
            if other not in ROOMS:
                bad.append(f"{module}:{line} imports {name}, which is in no room")
            elif ROOMS.index(other) > ROOMS.index(room):
                bad.append(f"{module}:{line} imports {name}: {other!r} comes after {room!r}")
    return bad


def test_every_module_is_in_a_room():
    modules = _modules()
    assert len(modules) > 50  # the walk found the packages, not an empty list
    assert not [m for m in modules if _room(m) not in ROOMS]


def test_imports_follow_the_room_order():
    imports = {m: _imports(m) for m in _modules()}
    assert layering_violations(imports) == []


@pytest.mark.parametrize("planted, expected", [
    (("ctxconv.memory.tflm", "ctxconv.sim.profiles"), "'sim' comes after 'memory'"),
    (("ctxconv.sim.cli", "ctxconv.export.exporter"), "'export' comes after 'sim'"),
    (("ctxconv.runtimes.factory", "torch"), "torch in the torch-free room"),
    (("ctxconv.export.cli", "benchmarks.report"), "nothing imports benchmarks"),
])
def test_a_planted_violation_is_caught(planted, expected):
    module, name = planted
    imports = {module: [(1, name)]}
    (msg,) = layering_violations(imports)
    assert expected in msg


# Fail any attempt to import torch (even when it is installed), then import every module
# of the torch-free rooms in one interpreter and check what got loaded.
_PROBE = """
import importlib, sys
class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch imported by a torch-free room")
        return None
sys.meta_path.insert(0, _NoTorch())
for name in sys.argv[1:]:
    importlib.import_module(name)
bad = [m for m in sys.modules if m == "torch" or m.startswith(("torch.", "ctxconv.train",
                                                               "ctxconv.export"))]
assert not bad, bad
"""


def test_torch_free_rooms_load_no_torch():
    free = [m for m in _modules() if _room(m) not in (*TORCH_ROOMS, "configs")]
    r = subprocess.run([sys.executable, "-c", _PROBE, *free], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]


def test_the_probe_catches_torch():
    r = subprocess.run([sys.executable, "-c", _PROBE, "ctxconv.train.model"],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "torch imported by a torch-free room" in r.stderr
