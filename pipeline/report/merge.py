"""One report per model, across runs: ``make android`` then ``make ios`` keeps both.

Each run writes ``<artifacts>/reports/<model>/report.json``. Instead of replacing an earlier run's
report, the new run's nodes are merged into it by name: a node the new run produced wins, a node
only the earlier report has is kept with the run it came from. Every node carries ``run``:
``{"finished", "config_sha256"}``, and ``runs`` lists those runs (their time, config and exit code),
so a kept node's settings stay known. Earlier nodes are kept only when both reports describe the
same reference (same model, weights and parity inputs): otherwise they belong to another model and
are dropped. ``run`` and ``exit_code`` at the top are the newest run's, as before.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from pipeline.errors import UserInputError

log = logging.getLogger(__name__)


def _config_digest(config: dict[str, Any]) -> str:
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _run_entry(report: dict[str, Any]) -> dict[str, Any]:
    run = report["run"]
    return {"finished": run["finished"], "config_sha256": _config_digest(run["config"]),
            "config": run["config"], "exit_code": report["exit_code"]}


def _reference(report: dict[str, Any]) -> str | None:
    return (report["run"].get("reference") or {}).get("sha256")


def stamp(report: dict[str, Any]) -> dict[str, Any]:
    """``report`` with every node marked as this run's and ``runs`` holding this run."""
    entry = _run_entry(report)
    mark = {"finished": entry["finished"], "config_sha256": entry["config_sha256"]}
    for node in report["nodes"]:
        node.setdefault("run", mark)
    report["runs"] = [entry]
    return report


def _key(run: dict[str, Any]) -> tuple[str, str]:
    return run["config_sha256"], run["finished"]


def merge(new: dict[str, Any], previous: dict[str, Any] | None) -> dict[str, Any]:
    """A copy of ``new`` (already :func:`stamp`-ed) with the nodes of ``previous`` it did not
    produce."""
    if previous is None or _reference(previous) is None or \
            _reference(previous) != _reference(new):
        return new
    produced = {node["name"] for node in new["nodes"]}
    kept = [node for node in previous["nodes"] if node["name"] not in produced]
    if not kept:
        return new
    fallback = _run_entry(previous)    # a report written before nodes carried their run
    earlier = {_key(run): run for run in previous.get("runs") or [fallback]}
    for node in kept:
        node.setdefault("run", {"finished": fallback["finished"],
                                "config_sha256": fallback["config_sha256"]})
    have = {_key(run) for run in new["runs"]}
    runs = new["runs"] + [earlier.get(key, fallback)
                          for key in sorted({_key(node["run"]) for node in kept} - have)]
    return {**new, "nodes": new["nodes"] + kept, "runs": runs}


def previous_report(out_dir: Path) -> dict[str, Any] | None:
    """The report already in ``out_dir``, if it is a readable report (else None, with a
    warning: a damaged earlier report is replaced, never trusted)."""
    from pipeline.report.schema import load_report_file

    path = Path(out_dir) / "report.json"
    if not path.is_file():
        return None
    try:
        return load_report_file(path)
    except UserInputError as exc:
        log.warning("the earlier report is not merged: %s", str(exc)[:300])
        return None
