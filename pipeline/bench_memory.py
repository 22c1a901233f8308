"""Peak resident memory of one runtime's inference, measured in a child process of its own.

:func:`pipeline.bench.benchmark` reports one high-water mark for the whole bench process, which
holds every runtime it has loaded so far. Here each measurement runs in a fresh interpreter
(:func:`pipeline.isolate.run_isolated`) that imports only what its runtime needs, so its
``peak_rss_mb`` (``VmHWM``, see :func:`pipeline.bench.peak_rss_mb`) is that runtime's own peak over loading
the model, the warm-up and the timed runs: the guide's "Peak Mem (MB)".

``kind`` says what runs: ``"file"`` (spec ``{"path", "input_shape"[, "target"]}``) an artifact
on the runtime of the named target, or the one :func:`targets.base.file_runner` picks for its
suffix; ``"torch"`` (spec ``{"config"}``,
a :class:`~pipeline.config.PipelineConfig` dict) the eager reference model.
"""
from __future__ import annotations

import importlib
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.bench import MIN_RUNS, MIN_WARMUP, benchmark, peak_rss_mb, proc_status_mb
from pipeline.isolate import IsolatedCallError, run_isolated

if TYPE_CHECKING:
    from targets.base import Runner

KINDS = ("file", "torch")
DEFAULT_TIMEOUT_S = 300.0
#: what a kind's opener returns: a call that creates the (not yet active) runner, the feed's
#: shape, and the modules imported before the baseline (the runner's ``runtime_modules``)
Opened = tuple[Callable[[], "Runner"], tuple[int, ...], list[str]]


def current_rss_mb() -> float:
    """This process's resident set now, MiB (``VmRSS``; without /proc, the peak so far)."""
    rss = proc_status_mb("VmRSS")
    return peak_rss_mb() if rss is None else rss


def _open_file(spec: dict[str, Any], threads: int, batch: int) -> Opened:
    """The runner of an artifact file (created, not loaded), its feed shape, and the runtime
    modules imported for it."""
    from targets.base import file_runner, registered_targets

    path = Path(spec["path"])
    if not path.exists():
        raise FileNotFoundError(f"no artifact at {path}")
    shape = [int(d) for d in spec["input_shape"]]
    if len(shape) != 4:
        raise ValueError(f"input_shape must be NCHW (4 dimensions), got {shape}")
    # by the target that made the file where known (a cache object has no suffix), else by suffix
    target = spec.get("target")
    runner = (registered_targets()[target]().runner(path, threads) if target
              else file_runner(path, threads))
    modules = list(type(runner).runtime_modules)
    for name in modules:
        importlib.import_module(name)
    return (lambda: runner), (batch, *shape[1:]), modules


def _open_torch(spec: dict[str, Any], threads: int, batch: int) -> Opened:
    """The eager reference model (built when loaded, so building counts as loading), its feed
    shape, and the runtime modules imported for it."""
    from pipeline.config import PipelineConfig
    from pipeline.context import RunContext
    from pipeline.stages.load import build_reference_model
    from targets.torch_ref import TorchRunner

    ctx = RunContext(PipelineConfig.model_validate(spec["config"]))
    return (lambda: TorchRunner(build_reference_model(ctx), threads),
            ctx.source.input_shape(batch), list(TorchRunner.runtime_modules))


def measure_in_child(kind: str, spec: dict[str, Any], threads: int, batch: int,
                     warmup: int, runs: int) -> dict[str, Any]:
    """Load one runner, time ``warmup`` + ``runs`` inferences on a seeded random float32 input,
    and report this process's memory (MiB): ``baseline_rss_mb`` after the imports, before the
    model is loaded; ``peak_rss_mb`` its high-water mark over loading and every inference;
    ``inference_rss_mb`` the difference. Meant for a fresh interpreter (:func:`peak_memory`)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    opener = _open_file if kind == "file" else _open_torch
    load, shape, modules = opener(spec, threads, batch)
    import_peak, baseline = peak_rss_mb(), current_rss_mb()
    start = time.perf_counter()
    with load() as runner:
        load_s = time.perf_counter() - start
        names = runner.input_names()
        if len(names) != 1:
            raise ValueError(f"the model has inputs {names}; this measurement feeds exactly one")
        feed = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        stats = benchmark(runner, {names[0]: feed}, warmup=warmup, runs=runs)
        peak = peak_rss_mb()
    return {"runtime": runner.runtime, "peak_rss_mb": peak, "baseline_rss_mb": baseline,
            "inference_rss_mb": round(peak - baseline, 1), "import_peak_rss_mb": import_peak,
            "load_s": round(load_s, 3),
            "runs": stats.runs, "warmup": stats.warmup, "threads": threads, "batch": batch,
            "median_ms": round(stats.median_ms, 3), "input_shape": list(shape),
            "preloaded": modules, "imported_torch": "torch" in sys.modules}


def _subject(kind: str, spec: dict[str, Any]) -> str:
    """What is measured, for records and error messages: the file, or the config's model."""
    if kind == "file":
        return str(spec.get("path"))
    return str((spec.get("config") or {}).get("model", "the reference model"))


def peak_memory(kind: str, spec: dict[str, Any], *, threads: int = 1, batch: int = 1,
                warmup: int = MIN_WARMUP, runs: int = MIN_RUNS,
                timeout_s: float = DEFAULT_TIMEOUT_S) -> dict[str, Any]:
    """:func:`measure_in_child` in a fresh interpreter. Its record gets ``verdict: "measured"``;
    a crash, timeout or error in the child gives ``verdict: "unverified"``, ``peak_rss_mb: None``
    and the one-line ``reason`` instead of raising, so one broken runtime cannot end a bench."""
    subject = _subject(kind, spec)
    kwargs = {"kind": kind, "spec": spec, "threads": threads, "batch": batch,
              "warmup": warmup, "runs": runs}
    try:
        record = run_isolated("pipeline.bench_memory:measure_in_child", kwargs, stage="bench",
                              model=subject, timeout_s=timeout_s, what="runtime")
    except IsolatedCallError as exc:
        lines = [line.strip() for line in exc.problem.splitlines() if line.strip()]
        return {"kind": kind, "model": subject, "runtime": None, "peak_rss_mb": None,
                "baseline_rss_mb": None, "inference_rss_mb": None, "threads": threads,
                "batch": batch, "warmup": warmup, "runs": 0, "verdict": "unverified",
                "reason": (lines[0] if lines else "the runtime failed")[:300]}
    return {"kind": kind, "model": subject, **record, "verdict": "measured"}
