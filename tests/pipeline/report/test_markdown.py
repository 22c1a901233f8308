"""report.md rendering and the `report` command's re-rendering."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.report.markdown import node_row, render_markdown


def _node(verdict: str, **parity) -> dict:
    return {"name": "export_onnx", "target": "onnx", "status": "ran", "cached": False,
            "precision": "fp32", "artifact": None,
            "parity": {"verdict": verdict, "reason": "r", "max_rel": 2e-7, "cosine": 0.999999,
                       "top1_agreement": 0.5, "failures": ["top1_agreement 0.5 < 1"], **parity},
            "latency": {"runtime": "onnxruntime", "median_ms": 1.234, "p90_ms": 2.5}}


def test_row_formats_metrics() -> None:
    row = node_row(_node("pass"))
    assert row[:3] == ["export_onnx", "onnxruntime", "pass"]
    assert row[5] == "50.0 %" and row[6] == "1.23" and row[-1] == "ran"


def test_failures_are_listed(tiny_run) -> None:
    report = {**tiny_run.report, "nodes": tiny_run.report["nodes"] + [_node("fail")]}
    text = render_markdown(report)
    assert "## Checks that did not pass" in text and "top1_agreement 0.5 < 1" in text


def test_report_command_rerenders(tiny_run, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run.out_dir, run_dir)
    (run_dir / "report.md").unlink()
    result = CliRunner().invoke(app, ["report", str(run_dir)])
    assert result.exit_code == 0
    assert (run_dir / "report.md").read_text() == render_markdown(
        json.loads((run_dir / "report.json").read_text()))
    assert "export_onnx" in result.stdout
