"""The ``mobile-export sweep`` command's options (registered on the CLI's app by pipeline.cli)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from pipeline.cli_guard import guard


def sweep(config: Path = typer.Option(..., "--config", help="The sweep file (YAML): space, "
                                      "targets, precisions, dataset, finetune_epochs."),
          executor: str = typer.Option("local", "--executor",
                                       help="local (one process per job) or dask."),
          workers: Optional[int] = typer.Option(None, "--workers",
                                                help="Jobs at once (default: half the cores)."),
          scheduler: Optional[str] = typer.Option(
              None, "--scheduler", help="tcp://HOST:PORT of an existing dask scheduler (the "
              "cache must then be an absolute path every worker shares)."),
          bench_slots: Optional[int] = typer.Option(
              None, "--bench-slots", help="Timings at once across jobs (default: half the "
              "cores; one thread each)."),
          job_timeout_s: Optional[float] = typer.Option(None, "--job-timeout-s",
                                                        help="Per-job limit, seconds."),
          latency_budget_ms: Optional[float] = typer.Option(
              None, "--latency-budget-ms", help="Recommend the most accurate node within it."),
          target_fps: Optional[float] = typer.Option(
              None, "--target-fps", help="Recommend the most accurate node reaching it."),
          out_dir: Optional[Path] = typer.Option(
              None, "--out", help="Sweep folder (default: artifacts/sweeps/<config name>)."),
          artifacts_dir: Optional[Path] = typer.Option(None, "--artifacts-dir",
                                                       help="Artifacts and cache folder."),
          debug: bool = typer.Option(False)) -> None:
    """Run a sweep over the design space; write sweep.json / .md / .html with Pareto fronts."""
    def body() -> int:
        from pipeline.sweep.command import sweep_command

        return sweep_command(config, executor=executor, workers=workers, scheduler=scheduler,
                             bench_slots=bench_slots, job_timeout_s=job_timeout_s,
                             latency_budget_ms=latency_budget_ms, target_fps=target_fps,
                             out_dir=out_dir, artifacts_dir=artifacts_dir)

    guard(debug, body)
