"""Write report.json, report.md and report.html atomically into a run's output folder."""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from pipeline.files import atomic_write_bytes, sweep_temp
from pipeline.errors import UserInputError
from pipeline.report.html import render_html
from pipeline.report.markdown import render_markdown

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"


#: what changes between two runs that produced the same artifacts and verdicts
VOLATILE_NODE_KEYS = ("seconds", "cached", "run")


def content_digest(report: dict[str, Any]) -> str:
    """sha256 of what report.md and report.html show, without what differs between a run and
    its cached rerun (times, cached flags, run stamps; ``ran`` and ``cached`` are one status)."""
    nodes = [{**{k: v for k, v in node.items() if k not in VOLATILE_NODE_KEYS},
              "status": "done" if node.get("status") in ("ran", "cached") else node.get("status")}
             for node in report["nodes"]]
    run = report.get("run") or {}
    content = {"tool": report.get("tool"), "model": report.get("model"),
               "machine": report.get("machine"), "exit_code": report.get("exit_code"),
               "config": run.get("config"), "reference": run.get("reference"), "nodes": nodes}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def write_report(report: dict[str, Any], out_dir: Path,
                 previous: dict[str, Any] | None = None) -> bool:
    """report.json, report.md and report.html into ``out_dir`` (temp files a killed earlier
    write left there are swept first). report.md and report.html are rendered only when their
    content changed since ``previous`` (the report this one replaces) or either is missing;
    returns whether they were. ``mobile-export report DIR`` renders them on request."""
    sweep_temp(out_dir)
    report["run"]["content_sha256"] = content_digest(report)
    atomic_write_bytes(out_dir / REPORT_JSON, json.dumps(report, indent=2, default=str).encode())
    unchanged = previous is not None and \
        (previous.get("run") or {}).get("content_sha256") == report["run"]["content_sha256"]
    if unchanged and (out_dir / REPORT_MD).is_file() and (out_dir / REPORT_HTML).is_file():
        return False
    render_pages(report, out_dir)
    return True


def render_pages(report: dict[str, Any], out_dir: Path) -> None:
    """report.md and report.html of ``report`` into ``out_dir``."""
    atomic_write_bytes(out_dir / REPORT_MD, render_markdown(report).encode())
    try:
        html = render_html(report)
    except Exception as exc:  # noqa: BLE001 - report.json and report.md are already written
        print(f"warning: report.html not written ({type(exc).__name__}: {exc}); report.json "
              "and report.md are complete; `mobile-export report DIR` renders it again",
              file=sys.stderr)
        (out_dir / REPORT_HTML).unlink(missing_ok=True)   # never leave an older run's page
        return
    atomic_write_bytes(out_dir / REPORT_HTML, html.encode())


def read_report(run_dir: Path) -> dict[str, Any]:
    """A run's report.json, checked to have the report's shape (pipeline.report.schema)."""
    from pipeline.report.schema import load_report_file

    path = Path(run_dir) / REPORT_JSON
    if not path.is_file():
        raise UserInputError(f"{run_dir} holds no {REPORT_JSON}; pass the --out folder of a run")
    return load_report_file(path)
