"""Target and Runner contracts shared by every runtime.

A :class:`Runner` wraps one artifact on one runtime. Public methods are fixed here; each backend
overrides only the ``*_impl`` hooks (template method, as Polygraphy's ``BaseRunner`` does), so state
checks live in one place.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np

from pipeline.errors import MobileExportError


class RunnerStateError(RuntimeError):
    """A runner was used outside its ``with`` block."""


class RuntimeLoadError(MobileExportError):
    """The runtime could not load the artifact (damaged, or of a form it does not take)."""


class Runner(ABC):
    """Runs one artifact on one runtime: ``with runner: runner.infer(feeds)``."""

    #: Short runtime name recorded in latency records, e.g. ``"torch-eager"``, ``"onnxruntime"``.
    runtime: ClassVar[str] = "unknown"

    def __init__(self, threads: int = 1) -> None:
        self.threads = threads
        self._active = False

    # -- public, fixed -------------------------------------------------------------------------
    def __enter__(self) -> "Runner":
        if self._active:
            raise RunnerStateError(f"{type(self).__name__} is already active")
        try:
            self.activate_impl()
        except (MobileExportError, MemoryError):
            raise
        except Exception as exc:  # noqa: BLE001 - each runtime raises its own types
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            first = lines[0][:240] if lines else ""
            raise RuntimeLoadError(f"{self.runtime} cannot load the artifact "
                                   f"({type(exc).__name__}: {first})") from exc
        self._active = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._active:
            self.deactivate_impl()
        self._active = False

    @property
    def is_active(self) -> bool:
        return self._active

    def input_names(self) -> list[str]:
        self._require_active()
        return self.input_names_impl()

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one inference; ``feeds`` maps input names to float32 NCHW arrays."""
        self._require_active()
        outputs = self.infer_impl(feeds)
        return {name: np.asarray(value) for name, value in outputs.items()}

    # -- backend hooks -------------------------------------------------------------------------
    @abstractmethod
    def activate_impl(self) -> None: ...

    @abstractmethod
    def infer_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    @abstractmethod
    def input_names_impl(self) -> list[str]: ...

    def deactivate_impl(self) -> None:
        """Release the session; default does nothing."""

    def _require_active(self) -> None:
        if not self._active:
            raise RunnerStateError(f"{type(self).__name__} used outside its `with` block")


class Target(ABC):
    """A deployment target: the stages that produce its artifacts and the runner that runs them.

    Adding a target is one new module in ``targets/`` that defines a subclass and decorates it
    with :func:`register`.
    """

    name: ClassVar[str]                      # the --targets value
    platform: ClassVar[str]                  # folder under artifacts/ for published copies
    precisions: ClassVar[tuple[str, ...]]
    suffixes: ClassVar[tuple[str, ...]]      # artifact file suffixes its runner can run

    def unavailable_reason(self) -> str | None:
        """None when converter and runtime are present here, else why not (one line)."""
        return None

    @abstractmethod
    def stages(self, ctx: "object", precisions: tuple[str, ...]) -> list["object"]:
        """The DAG stages that convert the trunk's outputs for this target."""

    def checks(self, ctx: "object", precisions: tuple[str, ...]) -> list["object"]:
        """Stages that run even where this target's runtime is missing (e.g. validating the
        input of a converter that needs a GPU). Default: none."""
        return []

    @abstractmethod
    def runner(self, path: "object", threads: int) -> Runner:
        """A runner for one artifact file of this target."""

    def write_sidecar(self, folder: "object", nodes: list[dict]) -> None:
        """Called after this target's verified artifacts were copied into ``folder`` (a Path),
        with their report nodes; a target that ships a sidecar (e.g. ``model.json``) writes it
        here. Default: none."""

    def publish_name(self, output: str, precision: str, suffix: str) -> str:
        """File name of a published copy, e.g. ``model.onnx`` or ``model_fp16.tflite``."""
        return f"model{suffix}" if precision == "fp32" else f"model_{precision}{suffix}"


_REGISTRY: dict[str, type[Target]] = {}


def register(cls: type[Target]) -> type[Target]:
    """Class decorator adding a target to the registry; a duplicate name is an error."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"target '{cls.name}' is registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def registered_targets() -> dict[str, type[Target]]:
    """Every target module in this package, imported once (they import heavy libraries lazily)."""
    import importlib
    import pkgutil

    import targets

    for info in pkgutil.iter_modules(targets.__path__):
        if info.name != "base":
            importlib.import_module(f"targets.{info.name}")
    return dict(_REGISTRY)
