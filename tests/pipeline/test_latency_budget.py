"""--latency-budget-ms: deployment nodes over the budget are marked, held back, exit 1."""
from __future__ import annotations

from pathlib import Path

from pipeline.graph import NodeResult
from pipeline.latency_budget import budget_verdicts, judge_latency, missed
from pipeline.report.nodes import exit_code_for
from pipeline.report.schema import check_report
from pipeline.run import execute


class _Stage:
    def __init__(self, name: str, target: str) -> None:
        self.name, self.target = name, target


def _result(name: str, target: str, status: str = "ran", median: float | None = 2.0,
            reason: str | None = None) -> NodeResult:
    latency = {"median_ms": median, "runtime": "onnxruntime"}
    if reason:
        latency["reason"] = reason
    return NodeResult(_Stage(name, target), status, record={"latency": latency})  # type: ignore[arg-type]


def test_the_verdicts_on_one_latency() -> None:
    assert judge_latency({"median_ms": 2.0, "runtime": "x"}, 5)["verdict"] == "pass"
    over = judge_latency({"median_ms": 7.5, "runtime": "x"}, 5)
    assert over["verdict"] == "fail" and over["reason"] == "median 7.5 ms > budget 5 ms (1.50x)"
    unmeasured = judge_latency({"median_ms": None, "reason": "Core ML runtime requires macOS"}, 5)
    assert unmeasured["verdict"] == "unverified"
    assert unmeasured["reason"] == "not judged: Core ML runtime requires macOS"
    assert judge_latency(None, 5)["verdict"] == "unverified"


def test_only_deployment_nodes_that_produced_something_are_judged() -> None:
    results = [_result("load", "torch"), _result("export_onnx", "onnx", median=9.0),
               _result("tflite:int8", "tflite", median=1.0),
               _result("tflite:fp32", "tflite", status="failed"),
               _result("coreml:fp32", "coreml", median=None, reason="no macOS")]
    verdicts = budget_verdicts(results, 5.0)
    assert set(verdicts) == {"export_onnx", "tflite:int8", "coreml:fp32"}
    assert missed(verdicts) == {"export_onnx"}
    assert budget_verdicts(results, None) == {}


def test_a_missed_budget_is_exit_code_1() -> None:
    node = {"parity": {"verdict": "pass"}, "status": "ran"}
    assert exit_code_for([node]) == 0
    assert exit_code_for([{**node, "latency_budget": {"verdict": "unverified"}}]) == 0
    assert exit_code_for([{**node, "latency_budget": {"verdict": "fail"}}]) == 1


def test_a_run_over_budget_is_marked_and_not_published_then_within_it_passes(
        tiny_config) -> None:
    over = execute(tiny_config(latency_budget_ms=1e-6))
    assert over.exit_code == 1
    nodes = {n["name"]: n for n in over.report["nodes"]}
    assert all("latency_budget" not in nodes[n] for n in ("load", "trace", "fuse"))
    budget = nodes["export_onnx"]["latency_budget"]
    assert budget["verdict"] == "fail" and "> budget 1e-06 ms" in budget["reason"]
    assert nodes["export_onnx"]["parity"]["verdict"] == "pass"   # parity is its own verdict
    assert over.published == {} and nodes["export_onnx"]["artifact"]["path"] != ""
    label = over.report["model"]["label"]
    onnx_file = Path(tiny_config().artifacts_dir) / "onnx" / label / "model.onnx"
    assert not onnx_file.exists()
    check_report(over.report, "report.json")                     # the schema knows the key
    assert "latency budget missed" in (over.out_dir / "report.md").read_text()

    within = execute(tiny_config(latency_budget_ms=budget["median_ms"] * 1000))
    assert within.exit_code == 0
    entry = next(n for n in within.report["nodes"] if n["name"] == "export_onnx")
    assert entry["cached"] and entry["latency_budget"]["verdict"] == "pass"
    assert onnx_file.is_file() and within.published["export_onnx"] == onnx_file
