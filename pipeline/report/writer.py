"""Write report.json, report.md and report.html atomically into a run's output folder."""
from __future__ import annotations

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


def write_report(report: dict[str, Any], out_dir: Path) -> None:
    """report.json, report.md and report.html into ``out_dir`` (temp files a killed earlier
    write left there are swept first)."""
    sweep_temp(out_dir)
    atomic_write_bytes(out_dir / REPORT_JSON, json.dumps(report, indent=2, default=str).encode())
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
