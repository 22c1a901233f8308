"""One sweep job: an ordinary pipeline run (:func:`pipeline.api.export`) turned into a row.

:func:`run_job` runs in the job's own process (a fresh interpreter under ``--executor local``,
a dask worker under ``--executor dask``); every outcome, a crash of the pipeline included, comes
back as a row (see the README, 'Sweeps', for its shape). :func:`failure_row` writes the rows
of jobs that never returned (a timeout, a killed process, Ctrl-C).
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Mapping

from pipeline.bench import BENCH_SLOTS_ENV
from pipeline.files import contained

STATUSES = ("ok", "gate_failed", "failed", "timeout", "interrupted")
#: stages whose node is the PyTorch reference (the last one with an accuracy is the reference's)
REFERENCE_STAGES = ("load", "finetune")
MAX_REASON = 600


def job_config(job: Mapping[str, Any], settings: Mapping[str, Any]) -> dict[str, Any]:
    """The row's ``config``: what makes this job what it is."""
    return {"model": job["model"], "width": job["width"], "resolution": job["resolution"],
            "nas": job.get("nas"), "finetune_epochs": settings["finetune_epochs"],
            "targets": list(settings["targets"]), "precisions": list(settings["precisions"])}


def run_dir_of(job_id: str, settings: Mapping[str, Any]) -> Path:
    """The job's report folder, checked to lie inside the sweep's runs folder."""
    runs = Path(settings["runs_dir"])
    return contained(runs, runs / job_id)


def base_row(job: Mapping[str, Any], settings: Mapping[str, Any], status: str,
             reason: str | None, seconds: float, machine: dict[str, Any] | None = None
             ) -> dict[str, Any]:
    """A row with no measurements (filled in by :func:`result_row`)."""
    assert status in STATUSES, status
    return {"job": job["id"], "config": job_config(job, settings), "status": status,
            "reason": reason[:MAX_REASON] if reason else reason, "cached": False,
            "seconds": round(float(seconds), 3), "machine": machine or {},
            "run_dir": str(run_dir_of(job["id"], settings)), "params": None, "macs": None,
            "accuracy": None, "nodes": {}}


def failure_row(job: Mapping[str, Any], settings: Mapping[str, Any], status: str, reason: str,
                seconds: float, machine: dict[str, Any] | None = None) -> dict[str, Any]:
    """The row of a job that did not return one itself."""
    return base_row(job, settings, status, reason, seconds, machine)


def _interval(accuracy: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not accuracy or accuracy.get("value") is None:
        return None
    return {"value": accuracy.get("value"), "ci_low": accuracy.get("ci_low"),
            "ci_high": accuracy.get("ci_high")}


def node_row(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A report.json node as the row's node: verdict, size, accuracy, batch-1 latency."""
    parity = entry.get("parity") or {}
    latency = entry.get("latency") or {}
    median = latency.get("median_ms")
    fps = latency.get("throughput_ips") if median else None
    if fps is not None and latency.get("batch", 1) != 1:
        fps = 1000.0 / median
    artifact = entry.get("artifact") or {}
    return {"target": entry["target"], "precision": entry["precision"],
            "runtime": latency.get("runtime"), "verdict": parity.get("verdict", "unverified"),
            "reason": parity.get("reason"), "size_bytes": artifact.get("bytes"),
            "accuracy": _interval(entry.get("accuracy")),
            "latency_ms": {"median": median, "p90": latency.get("p90_ms")}
            if median is not None else None,
            "fps": float(fps) if fps is not None else None,
            # the run times every node in one process holding all the runtimes so far, so its
            # high-water mark is not this artifact's own: add_peak_memory measures it apart
            "peak_memory_mb": None, "pareto": False}


def add_peak_memory(row: dict[str, Any], report: Mapping[str, Any], side: int) -> None:
    """Each passing node's peak resident memory over loading and running its artifact, in a
    fresh interpreter importing only its runtime (pipeline.bench_memory: the guide's "Peak Mem
    (MB)"); a node whose measurement fails keeps ``None`` and the reason."""
    from pipeline.bench_memory import peak_memory

    for entry in report.get("nodes") or []:
        key = f"{entry.get('target')}:{entry.get('precision')}"
        node, path = row["nodes"].get(key), (entry.get("artifact") or {}).get("path")
        if node is None or node["verdict"] != "pass" or not path or not Path(path).is_file():
            continue
        found = peak_memory("file", {"path": path, "input_shape": [1, 3, side, side],
                                     "target": entry["target"]}, threads=1)
        node["peak_memory_mb"] = found.get("peak_rss_mb")
        if found.get("verdict") != "measured":
            node["peak_memory_reason"] = found.get("reason")


def result_row(job: Mapping[str, Any], settings: Mapping[str, Any], report: Mapping[str, Any],
               exit_code: int, seconds: float) -> dict[str, Any]:
    """The row of a run that returned: its exit code as the status, the report's figures."""
    entries = list(report.get("nodes") or [])
    targets = set(settings["targets"])
    nodes = {f"{e['target']}:{e['precision']}": node_row(e) for e in entries
             if e.get("target") in targets}
    if exit_code == 0:
        status, reason = "ok", None
    elif exit_code == 1:
        failing = [f"{e['name']}: {(e.get('parity') or {}).get('reason') or 'failed'}"
                   for e in entries if (e.get("parity") or {}).get("verdict") == "fail"]
        failing += [f"{e['name']}: {e['latency_budget'].get('reason')}" for e in entries
                    if (e.get("latency_budget") or {}).get("verdict") == "fail"]
        status, reason = "gate_failed", "; ".join(failing) or "a gate failed"
    else:
        missing = sorted({e["target"] for e in entries if e.get("status") == "unavailable"})
        status = "failed"
        reason = (f"target(s) {', '.join(missing)} unavailable on this machine" if missing
                  else f"the run ended with exit code {exit_code}")
    row = base_row(job, settings, status, reason, seconds, dict(report.get("machine") or {}))
    model = report.get("model") or {}
    reference = None
    for stage in REFERENCE_STAGES:
        for entry in entries:
            if entry.get("stage") == stage and _interval(entry.get("accuracy")):
                reference = _interval(entry.get("accuracy"))
    measured = [e for e in entries if e.get("status") != "unavailable"]
    row.update({"cached": bool(measured) and all(e.get("cached") or e.get("status") == "cached"
                                                 for e in measured),
                "params": model.get("params"), "macs": model.get("macs"),
                "accuracy": reference, "nodes": nodes})
    return row


def ensure_slots(folder: Path, count: int) -> Path:
    """The bench-slot folder with exactly ``count`` lock files (pipeline.bench.timing_slot)."""
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        (folder / f"slot-{index}.lock").touch()
    for extra in folder.glob("slot-*.lock"):
        suffix = extra.stem.removeprefix("slot-")
        if not suffix.isdigit() or int(suffix) >= count:
            extra.unlink(missing_ok=True)
    return folder


def slots_folder(settings: Mapping[str, Any]) -> Path:
    """This machine's bench-slot folder: the sweep's own, or (remote workers) one in the temp
    folder shared by every sweep on the machine with the same slot count."""
    if settings.get("slots_dir"):
        return Path(settings["slots_dir"])
    import tempfile

    count = int(settings["bench_slots"])
    return Path(tempfile.gettempdir()) / f"mobile-export-bench-slots-{os.getuid()}-{count}"


def export_options(job: Mapping[str, Any], settings: Mapping[str, Any]) -> dict[str, Any]:
    """export()'s keyword arguments for this job (threads=1: one thread per timing)."""
    options: dict[str, Any] = dict(settings.get("options") or {})
    options.update(width=job["width"], resolution=job["resolution"],
                   targets=list(settings["targets"]), precisions=list(settings["precisions"]),
                   artifacts_dir=settings["artifacts_dir"],
                   out_dir=str(run_dir_of(job["id"], settings)), threads=1,
                   finetune_epochs=settings["finetune_epochs"])
    if settings.get("dataset"):
        options["dataset"] = settings["dataset"]
        options.setdefault("num_classes", 10)
    if job.get("nas") is not None:
        options["nas"] = dict(job["nas"])
    return options


def run_job(job: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """Run one job in this process and return its row (never raises for a failed run)."""
    from pipeline.machine import describe_machine

    started = time.perf_counter()
    machine = describe_machine()
    try:
        folder = ensure_slots(slots_folder(settings), int(settings["bench_slots"]))
        os.environ[BENCH_SLOTS_ENV] = str(folder)
        if settings.get("torch_threads"):
            import torch

            torch.set_num_threads(int(settings["torch_threads"]))
        from pipeline.api import export

        result = export(job["model"], **export_options(job, settings))
    except Exception as exc:  # any failure of this job is its row, not the sweep's end
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        reason = f"{type(exc).__name__}: {' '.join(lines)[:MAX_REASON]}" if lines \
            else type(exc).__name__
        return failure_row(job, settings, "failed", reason, time.perf_counter() - started,
                           machine)
    row = result_row(job, settings, result.report, result.exit_code,
                     time.perf_counter() - started)
    add_peak_memory(row, result.report, int(job["resolution"]))
    row["seconds"] = round(time.perf_counter() - started, 3)
    return row


def dask_job(job: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """:func:`run_job` on a dask worker, telling the client when it starts (its timeout runs
    from then) and on which worker (the one restarted if it overruns)."""
    from distributed import get_worker

    worker = get_worker()
    worker.log_event(settings["start_topic"], {"job": job["id"], "worker": worker.address,
                                               "key": job.get("key")})
    return run_job(job, settings)
