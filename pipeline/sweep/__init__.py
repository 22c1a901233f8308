"""Sweeps over a design space: ``mobile-export sweep --config sweep.yaml`` (pipeline.sweep.command).

spec (the file -> jobs), jobs (one pipeline run -> a row), executors (local processes or
dask.distributed), pareto and report (the rows -> sweep.json / .md / .html).
"""
