"""Make the shared test helpers (tests/graph_factory.py, tests/sim/fw_graphs.py)
importable."""

import sys
from pathlib import Path

_TESTS = Path(__file__).resolve().parents[1]
for _p in (_TESTS, _TESTS / "sim"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))
