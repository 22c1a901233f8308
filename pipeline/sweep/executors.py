"""Fan-out of sweep jobs: ``local`` (a fresh interpreter per job) or ``dask`` (dask.distributed).

Both call ``events.started(job)`` when a job starts and ``events.finished(row)`` for every job
that ends, with a row for each outcome: the job's own, or ``timeout`` (its limit passed; its
process tree is killed, or under dask its worker restarted) or ``failed`` (its process or dask
worker died). Ctrl-C (KeyboardInterrupt) kills what runs and propagates; the caller records
the unfinished jobs as interrupted.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Protocol

from pipeline.files import atomic_write_bytes, temp_dir
from pipeline.machine import usable_cores
from pipeline.sweep.jobs import failure_row

POLL_S = 0.2
START_TOPIC = "mobile-export-sweep-start"


class Events(Protocol):
    def started(self, job: dict[str, Any]) -> None:
        """``job`` began running."""

    def finished(self, row: dict[str, Any]) -> None:
        """A job ended with ``row``."""


def kill_tree(pid: int) -> None:
    """SIGKILL the process ``pid`` and every descendant (converter children that started their
    own sessions included)."""
    import psutil

    try:
        parent = psutil.Process(pid)
        victims = parent.children(recursive=True) + [parent]
    except psutil.NoSuchProcess:
        return
    for proc in victims:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(victims, timeout=10)


class _LocalJob:
    """One job's interpreter: ``python -m pipeline.isolate`` calling :func:`run_job`."""

    def __init__(self, job: dict[str, Any], settings: dict[str, Any], scratch: Path) -> None:
        self.job, self.settings = job, settings
        self.folder = temp_dir(scratch, job["id"])
        self.result = self.folder / "result.json"
        request = self.folder / "request.json"
        atomic_write_bytes(request, json.dumps({"target": "pipeline.sweep.jobs:run_job", "kwargs": {
            "job": job, "settings": settings}}).encode())
        log_dir = Path(settings["logs_dir"])
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log = open(log_dir / f"{job['id']}.log", "wb")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        # a session of its own: Ctrl-C reaches the sweep, which ends the job itself
        self.proc = subprocess.Popen([sys.executable, "-m", "pipeline.isolate", str(request),
                                      str(self.result)], stdout=self.log,
                                     stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.start = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def row(self) -> dict[str, Any] | None:
        """The job's row once its process has ended (None while it runs)."""
        code = self.proc.poll()
        if code is None:
            return None
        reply = json.loads(self.result.read_text()) if self.result.is_file() else {}
        self.close()
        if "result" in reply:
            return reply["result"]
        if code < 0:
            problem = f"the job's process was killed ({signal.Signals(-code).name})"
        elif reply.get("error"):
            problem = f"{reply['error']['type']}: {reply['error']['message']}"
        else:
            problem = f"the job's process exited with code {code}"
        return failure_row(self.job, self.settings, "failed",
                           f"{problem}; log: {self.log.name}", self.elapsed())

    def kill(self) -> None:
        kill_tree(self.proc.pid)
        self.proc.wait()
        self.close()

    def close(self) -> None:
        self.log.close()
        from pipeline.files import remove

        remove(self.folder)


def run_local(jobs: list[dict[str, Any]], settings: dict[str, Any], *, workers: int,
              timeout_s: float, events: Events) -> None:
    """Run ``jobs``, at most ``workers`` at a time, each in a fresh interpreter."""
    scratch = Path(settings["scratch_dir"])
    pending = deque(jobs)
    running: list[_LocalJob] = []
    try:
        while pending or running:
            while pending and len(running) < workers:
                job = pending.popleft()
                running.append(_LocalJob(job, settings, scratch))
                events.started(job)
            for handle in list(running):
                row = handle.row()
                if row is None and handle.elapsed() > timeout_s:
                    handle.kill()
                    row = failure_row(handle.job, settings, "timeout",
                                      f"exceeded the per-job limit of {timeout_s:g} s "
                                      "(killed)", handle.elapsed())
                if row is not None:
                    running.remove(handle)
                    events.finished(row)
            time.sleep(POLL_S)
    finally:   # Ctrl-C or an error here: leave no job running
        for handle in running:
            handle.kill()


# -- dask -----------------------------------------------------------------------------------


def _client(workers: int, scheduler: str | None) -> tuple[Any, Any]:
    """A client of ``scheduler``, or of a new LocalCluster of ``workers`` processes."""
    import dask
    from distributed import Client, LocalCluster

    # a job whose worker dies fails at once (KilledWorker) instead of being retried elsewhere
    dask.config.set({"distributed.scheduler.allowed-failures": 0})
    if scheduler:
        return Client(scheduler, timeout="30s"), None
    # dask's nanny starts workers with OMP/MKL/OpenBLAS at 1 thread and glibc's
    # MALLOC_TRIM_THRESHOLD_ at 64 KiB. A job here trains and converts with the threads the local
    # executor would give it (its timing still takes one), and with glibc's default trimming:
    # returning every freed 64 KiB block made a torch conv forward/backward 1.6x slower
    # (0.92 s against 0.58 s in a worker, 2-core EPYC) and the default sweep's jobs 1.5-3x.
    threads = str(max(1, (usable_cores() or os.cpu_count() or 1) // workers))
    environ = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
               "OPENBLAS_NUM_THREADS": threads}
    dask.config.set({"distributed.nanny.pre-spawn-environ": environ})
    import logging

    # the scheduler's INFO chatter (addresses, plugins, scratch folders) says nothing about a job
    logging.getLogger("distributed").setLevel(logging.WARNING)
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                           dashboard_address=None, silence_logs=logging.WARNING)
    return Client(cluster), cluster


def run_dask(jobs: list[dict[str, Any]], settings: dict[str, Any], *, workers: int,
             scheduler: str | None, timeout_s: float, events: Events) -> None:
    """Run ``jobs`` on dask.distributed workers (one thread each)."""
    from distributed import KilledWorker

    from pipeline.sweep.jobs import dask_job

    client, cluster = _client(workers, scheduler)
    lock = threading.Lock()
    begun: dict[str, tuple[float, str]] = {}   # job key -> (start, worker address)

    def on_start(event: Any) -> None:
        _, message = event
        with lock:
            begun.setdefault(message["key"], (time.monotonic(), message["worker"]))

    settings = {**settings, "start_topic": START_TOPIC}
    futures: dict[Any, dict[str, Any]] = {}
    try:
        client.subscribe_topic(START_TOPIC, on_start)
        pending = deque(jobs)
        announced: set[str] = set()
        while futures or pending:
            # no more jobs out than worker threads: a worker holds only the job it runs, so
            # its death fails that job alone (never one merely queued there)
            window = max(1, sum(client.nthreads().values()))
            while pending and len(futures) < window:
                job = pending.popleft()
                keyed = {**job, "key": f"sweep-{job['id']}-{os.urandom(4).hex()}"}
                futures[client.submit(dask_job, keyed, settings, key=keyed["key"],
                                      pure=False)] = keyed
            with lock:
                starts = dict(begun)
            for future, job in list(futures.items()):
                key = job["key"]
                if key in starts and key not in announced:
                    announced.add(key)
                    events.started(job)
                row = None
                elapsed = time.monotonic() - starts[key][0] if key in starts else 0.0
                if future.done():
                    try:
                        row = future.result()
                    except KilledWorker as exc:
                        row = failure_row(job, settings, "failed", "the dask worker running "
                                          f"it died (KilledWorker: {str(exc)[:200]})", elapsed)
                    except Exception as exc:  # the task raised outside run_job's own guard
                        row = failure_row(job, settings, "failed",
                                          f"{type(exc).__name__}: {str(exc)[:300]}", elapsed)
                elif key in starts and elapsed > timeout_s:
                    future.cancel()
                    _restart(client, starts[key][1])
                    row = failure_row(job, settings, "timeout", f"exceeded the per-job limit "
                                      f"of {timeout_s:g} s (its worker was restarted)", elapsed)
                if row is not None:
                    if key not in announced:
                        events.started(job)
                    del futures[future]
                    events.finished(row)
            time.sleep(POLL_S)
    finally:
        for future in futures:
            future.cancel()
        client.close()
        if cluster is not None:
            cluster.close()


def _restart(client: Any, worker: str) -> None:
    """Restart the worker stuck on an overrunning job (needs a nanny; else it is only said)."""
    try:
        client.restart_workers([worker], raise_for_error=True)
    except Exception as exc:  # a worker without a nanny cannot be restarted from here
        print(f"warning: dask worker {worker} is still busy with a timed-out job and could not "
              f"be restarted ({type(exc).__name__}: {str(exc)[:200]})", file=sys.stderr)
