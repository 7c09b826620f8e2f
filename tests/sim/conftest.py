"""Make the shared test helpers (tests/graph_factory.py, fw_graphs.py) importable."""

import sys
from pathlib import Path

for _p in (Path(__file__).resolve().parent, Path(__file__).resolve().parents[1]):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))
