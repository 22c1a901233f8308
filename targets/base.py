"""Target and Runner contracts shared by every runtime, and the registry of targets.

A :class:`Runner` wraps one artifact on one runtime. Public methods are fixed here; each backend
overrides only the ``*_impl`` hooks (template method, as Polygraphy's ``BaseRunner`` does), so
state checks, feed checks and batch chunking live in one place.

A target is one package ``targets/<name>/`` whose ``__init__`` registers its :class:`Target`
under that same name (the ``--targets`` value). The trunk never imports a target package: it
reaches a runtime through :func:`file_runner` (the registered target that runs a file suffix),
and :func:`target_names` lists the targets without importing any of them.
"""
from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np

from pipeline.errors import MobileExportError


class RunnerStateError(RuntimeError):
    """A runner was used outside its ``with`` block."""


class RuntimeLoadError(MobileExportError):
    """The runtime could not load the artifact (damaged, or of a form it does not take)."""


class IntermediatesUnavailable(MobileExportError):
    """The runtime cannot expose the intermediate tensors localisation compares."""


class Runner(ABC):
    """Runs one artifact on one runtime: ``with runner: runner.infer(feeds)``."""

    #: Short runtime name recorded in latency records, e.g. ``"torch-eager"``, ``"onnxruntime"``.
    runtime: ClassVar[str] = "unknown"
    #: Modules the runner imports when it loads an artifact (measurements that want the
    #: runtime's libraries in their baseline import these first, e.g. pipeline.bench_memory).
    runtime_modules: ClassVar[tuple[str, ...]] = ()

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

    #: The largest batch one ``infer_impl`` call takes (None: any); a backend may set it when it
    #: activates (e.g. a mobile model's batch of 1). Larger feeds are split here.
    max_batch: int | None = None

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one inference; ``feeds`` maps input names to float32 NCHW arrays of one batch
        size. Checked against the runner's inputs first; batches beyond ``max_batch`` are run
        in chunks and the outputs concatenated."""
        self._require_active()
        names = self.input_names_impl()
        unknown, missing = sorted(set(feeds) - set(names)), sorted(set(names) - set(feeds))
        if unknown or missing:
            raise ValueError(f"{type(self).__name__}: feeds {sorted(feeds)} do not match the "
                             f"model's inputs {names} (unknown {unknown}, missing {missing})")
        arrays = {name: np.asarray(value) for name, value in feeds.items()}
        sizes = {a.shape[0] if a.ndim else None for a in arrays.values()}
        if len(sizes) != 1 or None in sizes:
            raise ValueError(f"{type(self).__name__}: every feed needs the same leading batch "
                             f"dimension, got shapes {[list(a.shape) for a in arrays.values()]}")
        batch = sizes.pop()
        step = self.max_batch or batch
        if batch <= step:
            return {name: np.asarray(v) for name, v in self.infer_impl(arrays).items()}
        parts: dict[str, list[np.ndarray]] = {}
        for start in range(0, batch, step):
            chunk = {name: a[start:start + step] for name, a in arrays.items()}
            for name, value in self.infer_impl(chunk).items():
                parts.setdefault(name, []).append(np.asarray(value))
        return {name: np.concatenate(values, axis=0) for name, values in parts.items()}

    def tensors(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every intermediate tensor the runtime computes for ``feeds`` (one input), by the
        runtime's own tensor names, as float32 in the runtime's own layout (integer tensors
        dequantized with their own scale and zero point). The batch runs ``max_batch`` samples
        at a time (one when the runtime takes any) into arrays allocated once: every layer's
        tensor is held, so memory, not speed, decides. :meth:`Target.join_tensors` names them
        in ONNX terms."""
        self._require_active()
        (name, value), = feeds.items()
        value = np.asarray(value)
        step = self.max_batch or 1
        out: dict[str, np.ndarray] = {}
        for start in range(0, len(value), step):
            chunk = value[start:start + step]
            got = self.tensors_impl({name: chunk})
            if start == 0:      # the activations: one row per sample (not a weight's tensor)
                out = {key: np.empty((len(value), *np.shape(t)[1:]), np.float32)
                       for key, t in got.items() if np.ndim(t) >= 1 and len(t) == len(chunk)}
            for key in list(out):
                tensor = got.get(key)
                # a tensor missing from a chunk (a runtime that freed it) is not a batch's value
                if tensor is None or np.shape(tensor) != (len(chunk), *out[key].shape[1:]):
                    del out[key]
                    continue
                out[key][start:start + len(chunk)] = tensor
        return out

    # -- backend hooks -------------------------------------------------------------------------
    def tensors_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Intermediate tensors for one chunk; a runtime that exposes none says so."""
        raise IntermediatesUnavailable(f"{self.runtime} does not expose intermediate tensors")

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
    sidecars: ClassVar[tuple[str, ...]] = ()  # files write_sidecar puts beside the artifacts

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

    def publish_artifact(self, src: "object", dst: "object") -> None:
        """Copy a verified artifact (a cache object, a Path) to ``dst`` atomically; a target
        whose artifact is a folder (a Core ML package) overrides this."""
        from pipeline.files import atomic_copy

        atomic_copy(src, dst)  # type: ignore[arg-type]

    def checked_on(self, node: dict) -> tuple[str, bool]:
        """What ran a report node's checks, and whether that was a proxy for the runtime the
        artifact is deployed on (e.g. an evaluator standing in for a phone's runtime).
        Default: the runtime itself, named by the node's parity or latency record."""
        parity, latency = node.get("parity") or {}, node.get("latency") or {}
        return str(parity.get("runtime") or latency.get("runtime") or self.name), False

    def join_tensors(self, tensors: dict[str, np.ndarray], layers: "object",
                     info: dict) -> dict[str, tuple[str, np.ndarray]]:
        """Name a runner's :meth:`Runner.tensors` in ONNX terms: ONNX layer tensor -> (the
        target's tensor name, its value in the reference's NCHW layout).
        ``layers`` is the run's :class:`pipeline.localise.layer_map.LayerMap`; ``info`` the
        node's report ``info`` (where a converter recorded its naming). Default: the target
        keeps the ONNX tensor names (ONNX Runtime, TensorRT's ONNX parser); in a Q/DQ model a
        layer is read by the next one through ``<name>_DequantizeLinear_Output``
        (onnxruntime.quantization's naming): what the int8 model computes, rounding included."""
        names = self.names_in(list(tensors), layers)
        return {onnx: (name, tensors[name]) for onnx, name in names.items()}

    @staticmethod
    def names_in(available: list[str], layers: "object") -> dict[str, str]:
        """ONNX layer tensor -> the available tensor holding it, by ONNX name (the Q/DQ
        ``<name>_DequantizeLinear_Output`` first)."""
        present = set(available)
        found = {}
        for layer in layers.layers:  # type: ignore[attr-defined]
            for name in (f"{layer.tensor}_DequantizeLinear_Output", layer.tensor):
                if name in present:
                    found[layer.tensor] = name
                    break
        return found

    def runtime_target_for(self, node: dict) -> "Target":
        """The target whose runtime runs ``node``'s artifact: itself, unless the node's
        artifact is another target's format (TensorRT's Q/DQ ONNX runs on ONNX Runtime)."""
        return self

    def tensor_names(self, path: "object", layers: "object", info: dict) -> dict[str, str]:
        """ONNX layer tensor -> the name of the artifact's tensor holding it, read from the
        artifact without running it (the run's layer map in every naming). Default: the ONNX
        names, as TensorRT's ONNX parser keeps them (an engine is not readable without it)."""
        return {layer.tensor: layer.tensor for layer in layers.layers}  # type: ignore

    def intermediates_runner(self, path: "object", threads: int, info: dict,
                             source: "object") -> Runner:
        """The runner whose :meth:`Runner.tensors` localisation reads for an artifact of this
        target; ``source(digest)`` is the path of a cache object of the run (an engine's source
        ONNX). Default: the artifact's own runner."""
        return self.runner(path, threads)

    def artifact_digest(self, path: "object") -> str:
        """The digest the run recorded for an artifact file of this target (``verify``)."""
        from pipeline.artifact import sha256_file

        return sha256_file(path)  # type: ignore[arg-type]


_REGISTRY: dict[str, type[Target]] = {}
#: packages under targets/ that hold no Target: the reference runner
_NOT_TARGETS = frozenset({"torch_ref"})


def register(cls: type[Target]) -> type[Target]:
    """Class decorator adding a target to the registry. The target must be defined in the
    package ``targets.<its name>``; a duplicate name is an error (never a silent overwrite)."""
    package = cls.__module__.split(".")
    if len(package) < 2 or package[0] != "targets" or package[1] != cls.name:
        raise ValueError(f"target '{cls.name}' is defined in {cls.__module__}; a target lives "
                         f"in the package targets.{cls.name}")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"target '{cls.name}' is registered twice")
    _REGISTRY[cls.name] = cls
    return cls


@functools.lru_cache(maxsize=1)
def _package_names() -> tuple[str, ...]:
    import pkgutil

    import targets

    return tuple(sorted(info.name for info in pkgutil.iter_modules(targets.__path__)
                        if info.ispkg and info.name not in _NOT_TARGETS))


def target_names() -> list[str]:
    """The ``--targets`` names, from the package names alone (nothing is imported; the folder
    is listed once per process)."""
    return list(_package_names())


def registered_targets() -> dict[str, type[Target]]:
    """Every target package, imported once (they import heavy libraries lazily)."""
    import importlib

    for name in target_names():
        importlib.import_module(f"targets.{name}")
    return dict(_REGISTRY)


def target_for_file(path: "object") -> Target:
    """The registered target whose runner runs files of this suffix (e.g. ``.onnx``)."""
    from pathlib import Path

    suffix = Path(path).suffix  # type: ignore[arg-type]
    for target_cls in registered_targets().values():
        if suffix in target_cls.suffixes:
            return target_cls()
    known = sorted({s for t in registered_targets().values() for s in t.suffixes})
    raise LookupError(f"no target runs '{suffix}' files (targets run {', '.join(known)})")


def file_runner(path: "object", threads: int = 1) -> Runner:
    """A runner for an artifact file, from the target that runs its suffix: how the trunk and
    the other targets reach a runtime without importing its package."""
    return target_for_file(path).runner(path, threads)
