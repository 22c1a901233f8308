"""The stage DAG: order stages by their declared inputs/outputs, run them through the cache.

A stage declares the names it consumes and produces; the engine topologically sorts them
(``graphlib``), computes each stage's cache key from its config, its input digests and the versions
of the tools it calls, and either reuses the cached outputs or runs the stage in a private temp
directory and stores what it wrote. A stage that raises leaves nothing in the cache; the stages
that depend on it are skipped with a reason, and independent stages still run.
"""
from __future__ import annotations

import functools
import graphlib
import logging
import shutil
import time
import traceback
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, ClassVar

from pipeline.artifact import Artifact
from pipeline.cache import Cache, cache_key
from pipeline.errors import MobileExportError, StageError, UserInputError
from pipeline.prepare import Prepared, prepare_all

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=None)
def _version(dist: str) -> str:
    """One distribution's installed version (read once per process: parsing its METADATA for
    every stage of every run was a tenth of a cached run)."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "absent"


def tool_versions(distributions: tuple[str, ...]) -> dict[str, str]:
    """Installed versions of the distributions a stage calls (part of its cache key)."""
    return {dist: _version(dist) for dist in distributions}


@dataclass
class OutputFile:
    """A file a stage wrote into its work directory, to be stored by content."""

    path: Path
    kind: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class StageOutput:
    files: dict[str, OutputFile]
    record: dict[str, Any] = field(default_factory=dict)  # parity, latency, stage facts (JSON)


class Stage(ABC):
    """One node of the DAG. Subclasses set the class attributes and implement :meth:`run`."""

    stage: ClassVar[str]                  # kind of stage, e.g. "export_onnx"
    version: ClassVar[int] = 1            # bump when the stage's code changes its outputs
    tools: ClassVar[tuple[str, ...]] = ("torch",)
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    target: str = "torch"
    precision: str = "fp32"
    #: True when :meth:`prepare` does the untimed first half of :meth:`run` (pipeline.prepare)
    prepares: ClassVar[bool] = False

    @property
    def name(self) -> str:
        """Unique node name; a stage that runs per target/precision overrides it."""
        return self.stage

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """The slice of the run configuration that can change this stage's outputs."""

    @abstractmethod
    def run(self, inputs: dict[str, Artifact], workdir: Path) -> StageOutput:
        """Produce every declared output as a file under ``workdir``."""

    def prepare(self, inputs: dict[str, Artifact], workdir: Path) -> None:
        """The untimed first half of :meth:`run` (a conversion), run side by side with other
        stages' (pipeline.prepare); :meth:`run` then finds its results in ``workdir``, or does
        this itself when it was not called. Only for stages that set ``prepares``."""


@dataclass
class NodeResult:
    stage: Stage
    status: str                           # "ran", "cached", "failed", "skipped"
    outputs: dict[str, Artifact] = field(default_factory=dict)
    record: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None
    key: str | None = None

    @property
    def cached(self) -> bool:
        return self.status == "cached"


ProgressHook = Callable[[str, str, float], None]  # (node name, status, seconds)


class Graph:
    """A validated set of stages wired by output names."""

    def __init__(self, stages: list[Stage]) -> None:
        self.stages = {s.name: s for s in stages}
        if len(self.stages) != len(stages):
            raise ValueError("two stages share a name")
        self.producer: dict[str, str] = {}
        for s in stages:
            for out in s.outputs:
                if out in self.producer:
                    raise ValueError(f"output '{out}' is produced by both "
                                     f"'{self.producer[out]}' and '{s.name}'")
                self.producer[out] = s.name
        for s in stages:
            missing = [i for i in s.inputs if i not in self.producer]
            if missing:
                raise ValueError(f"stage '{s.name}' needs {missing}, which no stage produces")
        self._deps = {s.name: {self.producer[i] for i in s.inputs} for s in stages}

    def order(self) -> list[Stage]:
        """Stages in dependency order (ties kept in declaration order)."""
        sorter = graphlib.TopologicalSorter(self._deps)
        sorter.prepare()
        ordered: list[str] = []
        names = list(self.stages)
        while sorter.is_active():
            ready = sorted(sorter.get_ready(), key=names.index)
            ordered.extend(ready)
            sorter.done(*ready)
        return [self.stages[n] for n in ordered]

    def downstream(self, names: set[str]) -> set[str]:
        """The named stages and every stage that depends on them."""
        unknown = names - set(self.stages)
        if unknown:
            raise UserInputError(f"--force names unknown stage(s) {sorted(unknown)}; "
                                 f"stages in this run: {sorted(self.stages)}")
        result = set(names)
        changed = True
        while changed:
            changed = False
            for name, deps in self._deps.items():
                if name not in result and deps & result:
                    result.add(name)
                    changed = True
        return result

    def run(self, cache: Cache, force: set[str] | None = None,
            progress: ProgressHook | None = None) -> list[NodeResult]:
        """Run every stage in order; returns one result per stage."""
        forced = self.downstream(force or set())
        cache.sweep_stale()
        available: dict[str, Artifact] = {}
        results: list[NodeResult] = []
        failed: dict[str, str] = {}
        self._prepared: dict[str, Prepared] = {}
        self._considered: set[str] = set()   # stages a wave has looked at (each once)
        try:
            self._run_all(cache, forced, progress, available, results, failed)
        finally:
            for prepared in self._prepared.values():   # prepared, then never run (an error)
                shutil.rmtree(prepared.workdir, ignore_errors=True)
            self._prepared = {}
            cache.flush()
        return results

    def _key(self, stage: Stage, inputs: dict[str, Artifact]) -> str:
        return cache_key(stage.name, stage.version, stage.config(),
                         {n: a.digest for n, a in inputs.items()}, tool_versions(stage.tools))

    def _prepare_ready(self, cache: Cache, forced: set[str], available: dict[str, Artifact],
                       remaining: list[Stage], progress: ProgressHook | None) -> None:
        """Prepare, side by side, every remaining stage that prepares, has all its inputs and
        is not cached (one wave; pipeline.prepare)."""
        jobs = []
        for stage in remaining:
            if not stage.prepares or stage.name in self._considered or \
                    any(i not in available for i in stage.inputs):
                continue
            self._considered.add(stage.name)
            inputs = {name: available[name] for name in stage.inputs}
            if stage.name not in forced and cache.record_path(self._key(stage, inputs)).is_file():
                continue
            jobs.append((stage, inputs))
        if len(jobs) < 2:   # nothing to overlap: the stage prepares inside its own run
            return
        names = f"{len(jobs)} conversions"
        start = time.perf_counter()
        if progress:
            progress(names, "preparing", 0.0)
        self._prepared.update(prepare_all(jobs, cache.work_dir))
        if progress:
            progress(names, "prepared", time.perf_counter() - start)

    def _run_all(self, cache: Cache, forced: set[str], progress: ProgressHook | None,
                 available: dict[str, Artifact], results: list[NodeResult],
                 failed: dict[str, str]) -> None:
        order = self.order()
        for position, stage in enumerate(order):
            if stage.prepares and stage.name not in self._considered:
                self._prepare_ready(cache, forced, available, order[position:], progress)
            blocked = [self.producer[i] for i in stage.inputs if self.producer[i] in failed]
            if blocked:
                failed[stage.name] = blocked[0]
                results.append(NodeResult(stage, "skipped",
                                          error=f"upstream stage '{blocked[0]}' failed"))
                if progress:
                    progress(stage.name, "skipped", 0.0)
                continue
            result = self._run_one(stage, cache, available, stage.name in forced, progress)
            if result.status == "failed":
                failed[stage.name] = stage.name
            else:
                available.update(result.outputs)
            results.append(result)

    def _run_one(self, stage: Stage, cache: Cache, available: dict[str, Artifact],
                 forced: bool, progress: ProgressHook | None) -> NodeResult:
        inputs = {name: available[name] for name in stage.inputs}
        key = self._key(stage, inputs)
        prepared = self._prepared.pop(stage.name, None)
        # a node's time includes its share of the side-by-side wave (its own prepare)
        start = time.perf_counter() - (prepared.seconds if prepared is not None else 0.0)
        if progress:
            progress(stage.name, "running", 0.0)
        if forced:
            cache.evict(key)
        else:
            hit = cache.lookup(key, tuple(stage.outputs))
            if hit is not None:
                if prepared is not None:
                    shutil.rmtree(prepared.workdir, ignore_errors=True)
                outputs, record = hit
                seconds = time.perf_counter() - start
                if progress:
                    progress(stage.name, "cached", seconds)
                return NodeResult(stage, "cached", outputs, record, seconds, key=key)
        try:
            outputs, record = self._execute(stage, inputs, cache, prepared)
        except SystemExit as exc:   # user code (a model's forward) must not end the run silently
            from pipeline.model_source import describe_exit

            log.debug("stage %s exited:\n%s", stage.name, traceback.format_exc())
            if progress:
                progress(stage.name, "failed", time.perf_counter() - start)
            raise UserInputError(f"stage '{stage.name}': {describe_exit(exc)} ended the stage; "
                                 "a model (or a library a stage runs in-process) must not exit "
                                 "the process") from None
        except Exception as exc:  # a failed stage must never poison the cache
            seconds = time.perf_counter() - start
            message = str(exc) if isinstance(exc, MobileExportError) else \
                f"{type(exc).__name__}: {exc}"
            log.debug("stage %s failed:\n%s", stage.name, traceback.format_exc())
            if progress:
                progress(stage.name, "failed", seconds)
            if isinstance(exc, UserInputError):
                raise
            partial = exc.record if isinstance(exc, StageError) else {}   # measured before failing
            return NodeResult(stage, "failed", record=partial, seconds=seconds, error=message,
                              key=key)
        cache.store(key, stage.name, outputs, record)
        seconds = time.perf_counter() - start
        if progress:
            progress(stage.name, "ran", seconds)
        return NodeResult(stage, "ran", outputs, record, seconds, key=key)

    @staticmethod
    def _execute(stage: Stage, inputs: dict[str, Artifact], cache: Cache,
                 prepared: Prepared | None = None) -> tuple[dict[str, Artifact], dict[str, Any]]:
        """Run one stage in its work folder (the one its prepare used, if it was prepared)."""
        workdir = prepared.workdir if prepared is not None else cache.work_dir(stage.name)
        try:
            if prepared is not None and prepared.error is not None:
                raise prepared.error
            produced = stage.run(inputs, workdir)
            missing = [o for o in stage.outputs if o not in produced.files]
            if missing:
                raise RuntimeError(f"stage '{stage.name}' did not produce {missing}")
            outputs = {name: cache.put_file(f.path, f.kind, f.meta)
                       for name, f in produced.files.items()}
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        return outputs, produced.record
