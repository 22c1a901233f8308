"""One report per model: a run merges its nodes into the report an earlier run left (make
android, then make ios, keeps both), newest node wins, each node keeps its run."""
from __future__ import annotations

import copy
import json
from pathlib import Path

from pipeline.report.merge import merge, previous_report, stamp
from pipeline.report.schema import check_report


def _report(tiny_run, finished: str, extra: list[str], **config) -> dict:
    report = copy.deepcopy(tiny_run.report)
    report["run"]["finished"] = finished
    report["run"]["config"] = {**report["run"]["config"], **config}
    for node in report["nodes"]:
        node.pop("run", None)
    template = next(n for n in report["nodes"] if n["name"] == "export_onnx")
    for name in extra:
        report["nodes"].append({**copy.deepcopy(template), "name": name,
                                "target": name.split(":")[0]})
    report.pop("runs", None)
    return stamp(report)


def test_a_later_run_keeps_the_nodes_only_the_earlier_run_made(tiny_run) -> None:
    android = _report(tiny_run, "2026-12-01T10:00:00+00:00", ["tflite:fp32"], targets=["tflite"])
    ios = _report(tiny_run, "2026-12-01T11:00:00+00:00", ["coreml:fp32"], targets=["coreml"])
    merged = check_report(merge(ios, android), "merged")
    names = [n["name"] for n in merged["nodes"]]
    assert names.count("export_onnx") == 1 and {"tflite:fp32", "coreml:fp32"} <= set(names)
    by_name = {n["name"]: n for n in merged["nodes"]}
    assert by_name["tflite:fp32"]["run"]["finished"] == "2026-12-01T10:00:00+00:00"
    assert by_name["export_onnx"]["run"]["finished"] == "2026-12-01T11:00:00+00:00"
    assert by_name["coreml:fp32"]["run"] == by_name["export_onnx"]["run"]
    runs = {r["finished"]: r for r in merged["runs"]}
    assert set(runs) == {"2026-12-01T10:00:00+00:00", "2026-12-01T11:00:00+00:00"}
    assert runs["2026-12-01T10:00:00+00:00"]["config"]["targets"] == ["tflite"]
    assert merged["run"]["finished"] == "2026-12-01T11:00:00+00:00"    # the newest run's
    # merging again keeps one copy of everything
    again = merge(_report(tiny_run, "2026-12-01T12:00:00+00:00", ["coreml:fp32"],
                          targets=["coreml"]), merged)
    assert sorted(n["name"] for n in again["nodes"]) == sorted(names)
    assert len(again["runs"]) == 2


def test_a_report_of_another_model_is_replaced_not_merged(tiny_run) -> None:
    android = _report(tiny_run, "2026-12-01T10:00:00+00:00", ["tflite:fp32"])
    android["run"]["reference"] = {**android["run"]["reference"], "sha256": "cd" * 32}
    ios = _report(tiny_run, "2026-12-01T11:00:00+00:00", ["coreml:fp32"])
    assert merge(ios, android) == ios


def test_a_damaged_earlier_report_is_not_trusted(tmp_path: Path, caplog) -> None:
    (tmp_path / "report.json").write_text(json.dumps({"nodes": "everything"}))
    assert previous_report(tmp_path) is None
    assert "not merged" in caplog.text
    assert previous_report(tmp_path / "missing") is None


def test_a_run_writes_the_merged_report(tiny_run, tmp_path: Path) -> None:
    """A second (cached) run into a folder whose report holds a node it does not make keeps
    that node in report.json and report.md, and returns only its own nodes."""
    from pipeline.run import execute

    earlier = _report(tiny_run, "2026-12-01T09:00:00+00:00", ["tflite:fp32"])
    out = tmp_path / "report"
    out.mkdir()
    (out / "report.json").write_text(json.dumps(earlier))
    config = _config_with_out(tiny_run, out)
    outcome = execute(config)
    assert "tflite:fp32" not in {n["name"] for n in outcome.report["nodes"]}
    written = json.loads((out / "report.json").read_text())
    assert "tflite:fp32" in {n["name"] for n in written["nodes"]}
    markdown = (out / "report.md").read_text()
    assert "tflite:fp32" in markdown and "2026-12-01T09:00:00+00:00" in markdown


def _config_with_out(tiny_run, out: Path):
    from pipeline.config import PipelineConfig

    return PipelineConfig.model_validate({**tiny_run.report["run"]["config"], "out": out})
