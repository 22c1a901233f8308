"""The suite's runner: crash isolation and reports (a fake child), and the fast subset for real."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pipeline.conformance.report import markdown, summary
from pipeline.conformance.run import convert_all, judged, run_suite
from pipeline.conformance.cases import Case
from pipeline.isolate import IsolatedCallError


def _cases(*names: str) -> list[dict[str, Any]]:
    return [{"name": n} for n in names]


def test_a_crashing_case_costs_that_case_only(tmp_path: Path) -> None:
    calls: list[list[str]] = []

    def child(target: str, kwargs: dict[str, Any], **_: Any) -> int:
        names = [c["name"] for c in kwargs["cases"]]
        calls.append(names)
        with open(kwargs["progress"], "a") as log:
            for name in names:
                log.write(json.dumps({"name": name, "event": "start"}) + "\n")
                if name == "b":
                    log.write('{"name": "b", "event": "res')     # cut short by the crash
                    raise IsolatedCallError("conformance", "x", "the process crashed (SIGSEGV)", [])
                log.write(json.dumps({"name": name, "event": "result", "status": "pass",
                                      "reason": "ok"}) + "\n")
        return len(names)

    results = convert_all(_cases("a", "b", "c"), tmp_path, runner=child)
    assert calls == [["a", "b", "c"], ["c"]]
    assert results["a"]["status"] == results["c"]["status"] == "pass"
    assert results["b"]["status"] == "fail" and "SIGSEGV" in results["b"]["reason"]


def test_a_child_that_logs_nothing_costs_one_case_per_attempt(tmp_path: Path) -> None:
    attempts: list[int] = []

    def child(target: str, kwargs: dict[str, Any], **_: Any) -> None:
        attempts.append(len(kwargs["cases"]))
        raise IsolatedCallError("conformance", "x", "timed out after 90 s", [])

    results = convert_all(_cases("a", "b"), tmp_path, runner=child)
    assert attempts == [2, 1]
    assert all(r["status"] == "fail" and "timed out" in r["reason"] for r in results.values())


def test_expected_failures_and_unexpected_passes() -> None:
    crop = Case("test_resize_tf_crop_and_resize", Path("."), ("Resize",), 1e-3, 1e-7)
    failed = judged(crop, {"status": "fail", "reason": "values differ"})
    assert failed["status"] == "expected-fail" and "ROI" in failed["expected_reason"]
    passed = judged(crop, {"status": "pass", "reason": "ok"})
    assert passed["status"] == "pass" and passed["expected_fail"] is True
    rows = [{"name": crop.name, "family": "Resize", "tflite": passed,
             "tensorrt_plan": {"ok": True, "problems": []}},
            {"name": "test_relu", "family": "Relu", "tflite": {"status": "fail", "reason": "x|y"},
             "tensorrt_plan": {"ok": False, "problems": ["p"]}}]
    s = summary(rows)
    assert (s["run"], s["pass"], s["fail"], s["pass_rate"]) == (2, 1, 1, 0.5)
    assert s["unexpected_passes"] == [crop.name] and s["tensorrt_plan_ok"] == 1
    assert s["families"]["Relu"] == {"pass": 0, "fail": 1, "expected-fail": 0}
    text = markdown({"subset": "named", "versions": {"onnx": "1"}, "summary": s, "cases": rows})
    assert "| Relu | 0 | 1 | 0 |" in text and "| test_relu | fail | x/y |" in text


def test_fast_subset_through_the_real_converter(tmp_path: Path) -> None:
    """The 16-case subset of ``make test``: converted by the product's path, run on LiteRT,
    compared with the suite's outputs at its tolerances."""
    pytest.importorskip("onnx2tf")
    document = run_suite(tmp_path, fast=True)
    s = document["summary"]
    assert s["run"] == 16
    written = json.loads((tmp_path / "conformance.json").read_text())
    assert written["summary"] == s and (tmp_path / "conformance.md").is_file()
    by_name = {r["name"]: r for r in document["cases"]}
    # every op family of a MobileNet converts and matches the suite
    for name in ("test_conv_with_strides_padding", "test_relu", "test_hardswish",
                 "test_globalaveragepool", "test_averagepool_2d_pads",
                 "test_convtranspose", "test_unsqueeze_axis_0", "test_concat_2d_axis_1"):
        assert by_name[name]["tflite"]["status"] == "pass", by_name[name]["tflite"]
    assert by_name["test_conv_with_strides_padding"]["tflite"]["ops"] == {"CONV_2D": 1}
    # 3-D Concat of equal dims: onnx2tf's channels-last guess mixes the axes, a failure with
    # its reason
    concat = by_name["test_concat_3d_axis_1"]["tflite"]
    assert concat["status"] == "fail" and "values differ" in concat["reason"]
    assert all("problems" in r["tensorrt_plan"] for r in document["cases"])
