"""``mobile-export sweep``: run every job of a sweep file, keep the rows, write the sweep report.

Rows are kept in ``<out>/results.json`` (rewritten atomically after every job), so a sweep stopped
by Ctrl-C keeps what finished; a rerun runs every job again through the shared cache, where an
unchanged job finds each of its nodes (``cached: true``) and a new or changed one does its work.
Exit code: 0 every job ok, 1 some job failed, failed a gate or timed out, 2 bad input,
130 stopped by Ctrl-C.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, \
    TimeElapsedColumn

from pipeline.errors import EXIT_BAD_INPUT, EXIT_OK, EXIT_PARITY_FAILED, UserInputError
from pipeline.files import atomic_write_bytes, check_writable, sweep_temp
from pipeline.machine import usable_cores
from pipeline.sweep.jobs import failure_row, job_config
from pipeline.sweep.spec import Job, SweepSpec, expand, load_spec

EXECUTORS = ("local", "dask")
EXIT_INTERRUPTED = 130
RESULTS = "results.json"
MAX_RESULTS_BYTES = 64 << 20


def default_bench_slots() -> int:
    """Half the usable cores, at least one: every timing gets a core to itself and no two share
    an SMT pair (logical cores // 2 = physical cores on a 2-way SMT machine), and the jobs'
    converting and training keep the other half."""
    return max(1, (usable_cores() or os.cpu_count() or 1) // 2)


def default_workers() -> int:
    """Jobs at once: half the usable cores, at least one (each job trains and converts with
    the other threads torch gives it)."""
    return max(1, (usable_cores() or os.cpu_count() or 1) // 2)


class SweepEvents:
    """The rich progress bar (jobs done / failed / running), one line per finished job, and
    the results file rewritten after each."""

    def __init__(self, total: int, results: Path, rows: dict[str, dict[str, Any]],
                 console: Console) -> None:
        self.results, self.rows, self.console = results, rows, console
        self.running: set[str] = set()
        self.done = self.failed = 0
        self.progress = Progress(SpinnerColumn(), TextColumn("[bold]sweep[/]"), BarColumn(),
                                 MofNCompleteColumn(), TextColumn("{task.fields[counts]}"),
                                 TimeElapsedColumn(), console=console, transient=False)
        self.task = self.progress.add_task("sweep", total=total, counts=self._counts())

    def _counts(self) -> str:
        return f"failed {self.failed}  running {len(self.running)}"

    def started(self, job: dict[str, Any]) -> None:
        self.running.add(job["id"])
        self.progress.update(self.task, counts=self._counts())

    def finished(self, row: dict[str, Any]) -> None:
        self.running.discard(row["job"])
        self.done += 1
        self.failed += row["status"] != "ok"
        self.rows[row["job"]] = row
        save_results(self.results, self.rows)
        colour = "green" if row["status"] == "ok" else "red"
        note = f"  {row['reason']}" if row.get("reason") else ""
        self.progress.console.print(
            f"  [{colour}]{row['status']:>11}[/] {escape(row['job'])}  {row['seconds']:.1f} s"
            f"{'  (cached)' if row['cached'] else ''}{escape(note[:300])}", highlight=False)
        self.progress.update(self.task, completed=self.done, counts=self._counts())


def save_results(path: Path, rows: dict[str, dict[str, Any]]) -> None:
    """The rows so far, atomically."""
    data = {"schema": 1, "rows": rows}
    atomic_write_bytes(path, (json.dumps(data, indent=1, default=str) + "\n").encode())


def previous_rows(path: Path, jobs: list[dict[str, Any]], settings: dict[str, Any],
                  console: Console) -> dict[str, dict[str, Any]]:
    """The rows an earlier run of this sweep kept for jobs still in it, unchanged."""
    if not path.is_file():
        return {}
    try:
        if path.stat().st_size > MAX_RESULTS_BYTES:
            raise ValueError("too large")
        rows = json.loads(path.read_bytes())["rows"]
        wanted = {job["id"]: job_config(job, settings) for job in jobs}
        return {job_id: row for job_id, row in rows.items()
                if isinstance(row, dict) and wanted.get(job_id) == row.get("config")}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        console.print(f"[yellow]warning:[/] {escape(str(path))} is unreadable "
                      f"({type(exc).__name__}); starting the rows afresh", highlight=False)
        return {}


def _model_ref(model: str) -> str:
    """A ``file.py:factory`` model with an absolute path (jobs run elsewhere)."""
    if ":" in model:
        location, factory = model.rsplit(":", 1)
        if location.endswith(".py"):
            return f"{Path(location).resolve()}:{factory}"
    return model


def _settings(spec: SweepSpec, artifacts: Path, out: Path, slots: int, workers: int,
              remote: bool) -> dict[str, Any]:
    cores = usable_cores() or os.cpu_count() or 1
    return {"targets": list(spec.targets), "precisions": list(spec.precisions),
            "dataset": spec.dataset, "finetune_epochs": spec.finetune_epochs,
            "options": dict(spec.options), "artifacts_dir": str(artifacts),
            "runs_dir": str(out / "runs"), "logs_dir": str(out / "logs"),
            "scratch_dir": str(out), "bench_slots": slots,
            "slots_dir": None if remote else str(out / ".bench-slots"),
            "torch_threads": max(1, cores // workers)}


def _job_dicts(jobs: list[Job]) -> list[dict[str, Any]]:
    return [{"id": job.id, **job.to_json(), "model": _model_ref(job.model)} for job in jobs]


def sweep_command(config: Path, executor: str = "local", workers: int | None = None,
                  scheduler: str | None = None, bench_slots: int | None = None,
                  job_timeout_s: float | None = None, latency_budget_ms: float | None = None,
                  target_fps: float | None = None, out_dir: Path | None = None,
                  artifacts_dir: Path | None = None) -> int:
    """Run the sweep ``config``; the exit code (see the module doc)."""
    console = Console(stderr=True)
    try:
        return _sweep(config, executor, workers, scheduler, bench_slots, job_timeout_s,
                      latency_budget_ms, target_fps, out_dir, artifacts_dir, console)
    except UserInputError as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return EXIT_BAD_INPUT


def _check(executor: str, workers: int | None, scheduler: str | None, bench_slots: int | None,
           job_timeout_s: float | None, artifacts: Path) -> None:
    if executor not in EXECUTORS:
        raise UserInputError(f"--executor {executor!r}: use one of {', '.join(EXECUTORS)}")
    if scheduler and executor != "dask":
        raise UserInputError("--scheduler needs --executor dask")
    for name, value in (("--workers", workers), ("--bench-slots", bench_slots),
                        ("--job-timeout-s", job_timeout_s)):
        if value is not None and not value > 0:
            raise UserInputError(f"{name} must be positive, got {value}")
    if scheduler and workers is not None:
        raise UserInputError("--workers sizes a local cluster; with --scheduler the cluster "
                             "has the workers it has")
    if scheduler and not artifacts.is_absolute():
        raise UserInputError(f"--artifacts-dir {artifacts} is relative: with a remote "
                             "--scheduler the cache must be an absolute path on storage every "
                             "worker mounts (e.g. --artifacts-dir /shared/mobile-export)")


def _sweep(config: Path, executor: str, workers: int | None, scheduler: str | None,
           bench_slots: int | None, job_timeout_s: float | None,
           latency_budget_ms: float | None, target_fps: float | None, out_dir: Path | None,
           artifacts_dir: Path | None, console: Console) -> int:
    artifacts = Path(artifacts_dir) if artifacts_dir is not None else Path("artifacts")
    _check(executor, workers, scheduler, bench_slots, job_timeout_s, artifacts)
    spec = load_spec(Path(config))
    jobs = _job_dicts(expand(spec))
    out = Path(out_dir) if out_dir is not None else \
        artifacts / "sweeps" / (Path(config).stem or "sweep")
    check_writable(artifacts, "artifacts folder", "--artifacts-dir")
    check_writable(out, "sweep folder", "--out")
    artifacts, out = artifacts.absolute(), out.absolute()
    out.mkdir(parents=True, exist_ok=True)
    sweep_temp(out)
    n_workers = workers or default_workers()
    slots = bench_slots or default_bench_slots()
    settings = _settings(spec, artifacts, out, slots, n_workers, bool(scheduler))
    if not scheduler:
        from pipeline.sweep.jobs import ensure_slots

        ensure_slots(Path(settings["slots_dir"]), slots)
    timeout = job_timeout_s or spec.job_timeout_s
    budget = latency_budget_ms or spec.latency_budget_ms
    fps = target_fps or spec.target_fps
    where = f"scheduler {scheduler}" if scheduler else \
        f"{n_workers} {'dask worker' if executor == 'dask' else 'process'}(es)"
    console.print(f"sweep {escape(spec.title)}: {len(jobs)} jobs on {executor} ({where}), "
                  f"{slots} bench slot(s), {timeout:g} s per job; cache "
                  f"{artifacts / 'cache'}" + (" (must be a path every worker shares)"
                                              if executor == "dask" else ""), highlight=False)
    results = out / RESULTS
    rows = previous_rows(results, jobs, settings, console)
    events = SweepEvents(len(jobs), results, rows, console)
    finished: set[str] = set()
    original = events.finished

    def finished_row(row: dict[str, Any]) -> None:
        finished.add(row["job"])
        original(row)

    events.finished = finished_row  # type: ignore[method-assign]
    interrupted = False
    with events.progress:
        try:
            if executor == "local":
                from pipeline.sweep.executors import run_local

                run_local(jobs, settings, workers=n_workers, timeout_s=timeout, events=events)
            else:
                from pipeline.sweep.executors import run_dask

                run_dask(jobs, settings, workers=n_workers, scheduler=scheduler,
                         timeout_s=timeout, events=events)
        except KeyboardInterrupt:
            interrupted = True
    if interrupted:
        for job in jobs:
            if job["id"] not in finished and job["id"] not in rows:
                rows[job["id"]] = failure_row(job, settings, "interrupted", "the sweep was "
                                              "stopped (Ctrl-C) before this job finished", 0.0)
        save_results(results, {k: v for k, v in rows.items() if v["status"] != "interrupted"})
    ordered = [rows[job["id"]] for job in jobs if job["id"] in rows]
    from pipeline.sweep.report import write_sweep_report

    write_sweep_report(ordered, out, latency_budget_ms=budget, target_fps=fps, title=spec.title)
    console.print(f"sweep report: {out / 'sweep.md'} (rows: {results})", highlight=False)
    if interrupted:
        console.print("stopped: rerun the same command to resume (finished jobs come from the "
                      "cache)", highlight=False)
        return EXIT_INTERRUPTED
    return EXIT_OK if all(row["status"] == "ok" for row in ordered) else EXIT_PARITY_FAILED
