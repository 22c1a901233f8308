"""Side-by-side conversions: the untimed first half of independent stages, run concurrently.

A stage that sets ``prepares`` splits its work: :meth:`Stage.prepare` converts (in a child
process, so a thread here only waits on it) and leaves its results in the stage's work folder;
:meth:`Stage.run` then checks and times what was prepared. The graph prepares every ready,
uncached such stage at once (one wave), then runs them one after another, so latency is never
measured while another conversion holds a core. A thread pool is enough: the work happens in
the children, which :mod:`pipeline.isolate` already bounds with a timeout.
"""
from __future__ import annotations

import logging
import os
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger(__name__)

#: more concurrent converters than this only add memory (each child imports TensorFlow or
#: coremltools, about 1 GiB)
MAX_WORKERS = 4


@dataclass
class Prepared:
    """What one stage's prepare left: its work folder, the exception it raised (re-raised by
    the graph when the stage runs, so a failure is reported where it belongs) and its time."""

    workdir: Path
    error: BaseException | None
    seconds: float


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:   # pragma: no cover - not Linux
        return os.cpu_count() or 1


def prepare_workers() -> int:
    """How many conversions run side by side: one per usable core, at most MAX_WORKERS."""
    return max(1, min(MAX_WORKERS, usable_cores()))


def _prepare_one(stage: Any, inputs: dict[str, Any], workdir: Path) -> Prepared:
    start = time.perf_counter()
    try:
        stage.prepare(inputs, workdir)
    except BaseException as exc:   # kept for the stage's run, which re-raises it in order
        log.debug("prepare of %s failed:\n%s", stage.name, traceback.format_exc())
        return Prepared(workdir, exc, time.perf_counter() - start)
    return Prepared(workdir, None, time.perf_counter() - start)


def prepare_all(jobs: list[tuple[Any, dict[str, Any]]], work_dir: Callable[[str], Path],
                workers: int | None = None) -> dict[str, Prepared]:
    """Prepare each (stage, inputs) of ``jobs`` in its own new work folder, ``workers`` at a
    time (default :func:`prepare_workers`); returns the results by stage name. One job runs in
    this thread: there is nothing to overlap."""
    folders = {stage.name: work_dir(stage.name) for stage, _ in jobs}
    workers = workers or prepare_workers()
    if len(jobs) == 1 or workers == 1:
        return {stage.name: _prepare_one(stage, inputs, folders[stage.name])
                for stage, inputs in jobs}
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="prepare") as pool:
        futures = {stage.name: pool.submit(_prepare_one, stage, inputs, folders[stage.name])
                   for stage, inputs in jobs}
        return {name: future.result() for name, future in futures.items()}
