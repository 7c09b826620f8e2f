"""The firmware simulator and the block-graph format must not pull in torch or the
training code; the format imports nothing of export or firmware_sim either."""

from __future__ import annotations

import subprocess
import sys

import pytest

MODULES = [
    "ctxconv.blockgraph",
    "ctxconv.blockgraph.ir",
    "ctxconv.blockgraph.manifest",
    "ctxconv.blockgraph.tflite_reader",
    "ctxconv.blockgraph.tflite_schema",
    "ctxconv.firmware_sim",
    "ctxconv.firmware_sim.arena_model",
    "ctxconv.firmware_sim.cost",
    "ctxconv.blockgraph.fixedpoint",
    "ctxconv.blockgraph.greedy",
    "ctxconv.firmware_sim.interpreter",
    "ctxconv.firmware_sim.kernels",
    "ctxconv.firmware_sim.planner",
    "ctxconv.firmware_sim.profiles",
]

# Fail any attempt to import torch (even when it is installed), then check sys.modules.
_PROBE = """
import importlib, sys
class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch imported by the firmware simulator")
        return None
sys.meta_path.insert(0, _NoTorch())
importlib.import_module(sys.argv[1])
bad = [m for m in sys.modules if m == "torch" or m.startswith(("torch.", "ctxconv.train"))]
assert not bad, bad
if sys.argv[1].startswith("ctxconv.blockgraph"):
    bad = [m for m in sys.modules if m.startswith(("ctxconv.export", "ctxconv.firmware_sim"))]
    assert not bad, bad
"""


@pytest.mark.parametrize("module", MODULES)
def test_import_without_torch(module: str):
    r = subprocess.run([sys.executable, "-c", _PROBE, module], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
