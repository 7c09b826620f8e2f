"""ctxconv: contextual convolutions from host to microcontroller."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ctxconv")
except PackageNotFoundError:  # a source tree that was never installed: pyproject's version
    __version__ = "0.1.0"
