"""The flatc-generated TFLite schema module, shared by the writer and the reader."""

from __future__ import annotations

from types import ModuleType


def schema() -> ModuleType:
    """The flatc-generated TFLite schema module (tflite-micro's, else LiteRT's).

    Imported on first call, so importing a module that uses it loads no runtime wheel.
    """
    try:
        from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb
    except ImportError:  # pragma: no cover - depends on the installed wheels
        from ai_edge_litert import schema_py_generated as fb
    return fb
