"""report.md rendering and the `report` command's re-rendering."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.report.markdown import node_row, notes_section, render_markdown


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


def test_mixed_precision_layers_and_warnings_are_shown() -> None:
    node = {**_node("pass"), "name": "onnx:int8",
            "warnings": ["1 layer(s) kept in float so that int8 passes its gates: node_conv2d"],
            "info": {"mixed_precision": {
                "float_layers": ["node_conv2d"],
                "cost": {"float_layers": 1, "of_layers": 53, "params_share": 0.0004,
                         "macs_share": 0.036, "median_ms": 3.06, "int8_median_ms": 3.1}}}}
    lines = notes_section([_node("pass"), node])
    text = "\n".join(lines)
    assert lines[1] == "## Warnings and mixed precision" and "**onnx:int8**" in text
    assert "1 of 53 layers in float (node_conv2d): 0.04 % of parameters, 3.6 % of MACs" in text
    assert "warning: 1 layer(s) kept in float" in text and "export_onnx" not in text
    assert notes_section([_node("pass")]) == []


def test_a_localised_node_names_its_cause_or_what_was_absorbed() -> None:
    from pipeline.report.markdown import localisation_note

    entry = {"torch_module": "features.5.conv.0.0", "fused_with": ["features.5.conv.0.2"],
             "onnx_node": "node_conv2d_5", "onnx_tensor": "relu6_5", "target_tensor": "t5",
             "error": {"max_rel": 0.9, "cosine": -0.7}, "limit": {"min_cosine": 0.8}}
    cause = localisation_note({"precision": "int8", "limit": {"min_cosine": 0.8},
                               "compared": 60, "first_divergent": entry, "transient": []})
    assert "**features.5.conv.0.0**, fused with features.5.conv.0.2" in cause
    assert "cosine -0.70000" in cause
    absorbed = localisation_note({"precision": "int8", "limit": {"min_cosine": 0.8},
                                  "compared": 60, "first_divergent": None,
                                  "transient": [{**entry, "torch_module": "features.1.fc1"}]})
    assert "no single layer" in absorbed and absorbed.endswith(
        "absorbed by the next layers: features.1.fc1")


def test_a_localisation_of_the_wrong_shape_is_refused_not_rendered(tiny_run, tmp_path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run.out_dir, run_dir)
    report = json.loads((run_dir / "report.json").read_text())
    report["nodes"][-1]["localisation"] = {"first_divergent": {"torch_module": "x",
                                                               "fused_with": [1]},
                                           "curve": [{"torch_module": "x", "cosine": "y"}]}
    (run_dir / "report.json").write_text(json.dumps(report))
    result = CliRunner().invoke(app, ["report", str(run_dir)])
    assert result.exit_code == 2
    assert "localisation" in result.output and "does not have report.json's shape" in \
        " ".join(result.output.split())
