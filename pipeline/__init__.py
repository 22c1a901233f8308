"""mobile-export: PyTorch vision models to verified deployment artifacts.

``from pipeline import export`` is the Python API (:mod:`pipeline.api`); it is imported on
first use, so ``import pipeline`` (every CLI start) stays free of torch.
"""
from typing import Any

from pipeline.version import __version__

_API = ("export", "ExportResult", "ExportedNode")
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        from pipeline import api

        return getattr(api, name)
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
