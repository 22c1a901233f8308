"""pipeline.localise.auto: a node that fails its gate carries ``localisation`` in report.json,
report.md names its first divergent layer and report.html plots its error against depth."""
from __future__ import annotations

import json

from pipeline.config import PipelineConfig
from pipeline.report.schema import ReportFile
from pipeline.run import execute


def test_a_failed_node_is_localised_in_every_report(tiny_settings, tmp_path) -> None:
    # a gate no int8 model can pass and a layer limit int8 noise exceeds: the failure and the
    # layer it starts at are constructed, whatever this CPU's int8 kernels compute
    config = PipelineConfig.model_validate({
        **tiny_settings, "artifacts_dir": tmp_path / "artifacts", "out": tmp_path / "report",
        "precisions": ["fp32", "int8"], "tolerances": {"int8": {"min_cosine": 0.9999999}},
        "layer_tolerances": {"int8": {"min_cosine": 0.9999999}}})
    outcome = execute(config)
    nodes = {n["name"]: n for n in outcome.report["nodes"]}
    assert nodes["export_onnx"]["parity"]["verdict"] == "pass"
    assert "localisation" not in nodes["export_onnx"], "a passing node is not localised"
    record = nodes["onnx:int8"]["localisation"]
    assert nodes["onnx:int8"]["parity"]["verdict"] == "fail"
    first = record["first_divergent"]
    assert first is not None and first["limit"]["min_cosine"] == 0.9999999
    assert first["torch_module"].startswith("features.") and first["error"]["cosine"] < 0.9999999
    assert record["top"] and record["curve"] and record["runtime"] == "onnxruntime"
    ReportFile.model_validate(outcome.report)
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert f"first divergent layer: **{first['torch_module']}**" in markdown
    html = (tmp_path / "report" / "report.html").read_text()
    assert "Where each localised node" in html and "1 − centred cosine" in html
    # the failed node's artifact is a cache object with no suffix: found by its digest
    from pathlib import Path

    from pipeline.localise.command import localise_artifact

    again = localise_artifact(Path(nodes["onnx:int8"]["artifact"]["path"]), tmp_path / "report")
    assert again["node"] == "onnx:int8" and again["curve"] == record["curve"]


def test_a_rerun_reuses_the_localisation_and_a_damaged_record_is_recomputed(
        tiny_settings, tmp_path, monkeypatch) -> None:
    from pipeline.localise import auto

    config = PipelineConfig.model_validate({
        **tiny_settings, "artifacts_dir": tmp_path / "artifacts", "out": tmp_path / "report",
        "precisions": ["fp32", "int8"], "tolerances": {"int8": {"min_cosine": 0.9999999}}})
    first = execute(config)
    record = next(n for n in first.report["nodes"] if n["name"] == "onnx:int8")["localisation"]
    stored = [path for path in (tmp_path / "artifacts" / "cache" / "localise").glob("*.json")
              if "curve" in json.loads(path.read_text())]     # the others: layer names
    assert len(stored) == 1 and "memo_key" not in record

    def refuse(*args, **kwargs):
        raise AssertionError("localised again although nothing changed")

    monkeypatch.setattr(auto, "localise", refuse)
    again = execute(config)
    assert next(n for n in again.report["nodes"]
                if n["name"] == "onnx:int8")["localisation"] == record
    remembered = json.loads(stored[0].read_text())       # its own key, a damaged body
    stored[0].write_text(json.dumps({"memo_key": remembered["memo_key"],
                                     "first_divergent": None,
                                     "curve": [{"torch_module": 1, "cosine": "x"}]}))
    monkeypatch.undo()
    third = execute(config)
    assert next(n for n in third.report["nodes"]
                if n["name"] == "onnx:int8")["localisation"]["curve"] == record["curve"]


def test_localise_all_plots_every_verified_node_and_off_localises_none(tiny_settings,
                                                                       tmp_path) -> None:
    from typer.testing import CliRunner

    from pipeline.cli import app

    result = CliRunner().invoke(app, [
        "run", "--model", tiny_settings["model"], "--width", str(tiny_settings["width"]),
        "--resolution", str(tiny_settings["resolution"]), "--num-classes", "10",
        "--targets", "onnx", "--precisions", "fp32", "--localise", "all",
        "--artifacts-dir", str(tmp_path / "artifacts"), "--out", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["run"]["config"]["localise"] == "all"
    export = next(n for n in report["nodes"] if n["name"] == "export_onnx")
    assert export["parity"]["verdict"] == "pass"
    assert export["localisation"]["first_divergent"] is None and export["localisation"]["curve"]
    assert "Where each localised node" in (tmp_path / "report" / "report.html").read_text()
    assert "no single layer" not in (tmp_path / "report" / "report.md").read_text()

    config = PipelineConfig.model_validate({
        **tiny_settings, "artifacts_dir": tmp_path / "off" / "artifacts",
        "out": tmp_path / "off" / "report", "targets": ["onnx"], "precisions": ["fp32", "int8"],
        "tolerances": {"int8": {"min_cosine": 0.9999999}}, "localise": "off"})
    outcome = execute(config)
    failed = next(n for n in outcome.report["nodes"] if n["name"] == "onnx:int8")
    assert failed["parity"]["verdict"] == "fail" and "localisation" not in failed
