"""``mobile-export localise``: the first divergent layer and a short table on the terminal, the
record with --json, exit 1 when a layer diverges, 0 when none does, 2 on a bad input."""
from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from pipeline.cli import app


def _export(report: dict) -> dict:
    return next(n for n in report["nodes"] if n["name"] == "export_onnx")


def test_an_intact_artifact_exits_0_and_writes_its_record(tiny_run, tmp_path) -> None:
    out = tmp_path / "where.json"
    assert _export(tiny_run.report)["parity"]["verdict"] == "pass"   # what "intact" stands on
    artifact = _export(tiny_run.report)["artifact"]["path"]
    result = CliRunner().invoke(app, ["localise", artifact, "--run", str(tiny_run.out_dir),
                                      "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "export_onnx (fp32, onnxruntime): no layer diverges" in result.output
    record = json.loads(out.read_text())
    assert record["first_divergent"] is None and record["node"] == "export_onnx"
    assert f"{record['compared']} layers compared on {record['samples']} inputs" in result.output


def test_a_seeded_fault_exits_1_naming_its_layer(tiny_run, corrupt, tmp_path) -> None:
    import onnx

    source = Path(_export(tiny_run.report)["artifact"]["path"])
    convs = [n for n in onnx.load(str(source)).graph.node if n.op_type == "Conv"]
    bad = tmp_path / "bad.onnx"
    corrupt.onnx(source, bad, convs[10].name)
    result = CliRunner().invoke(app, ["localise", str(bad), "--run", str(tiny_run.out_dir),
                                      "--node", "export_onnx"])
    assert result.exit_code == 1, result.output
    layers = json.loads((source.parent / "layer_map.json").read_text())["layers"]
    seeded = next(layer["module"] for layer in layers if layer["onnx_node"] == convs[10].name)
    assert f"first divergent layer {seeded}" in " ".join(result.output.split())
    assert "error added" in result.output


def test_a_missing_artifact_or_node_is_one_line_exit_2(tiny_run, tmp_path) -> None:
    missing = CliRunner().invoke(app, ["localise", str(tmp_path / "none.onnx"),
                                       "--run", str(tiny_run.out_dir)])
    assert missing.exit_code == 2 and "does not exist" in missing.output
    artifact = _export(tiny_run.report)["artifact"]["path"]
    unknown = CliRunner().invoke(app, ["localise", artifact, "--run", str(tiny_run.out_dir),
                                       "--node", "tflite:fp99"])
    assert unknown.exit_code == 2 and "the run has no node 'tflite:fp99'" in unknown.output
