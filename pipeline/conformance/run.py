"""Run the conformance suite: freeze the cases, convert and compare them in an isolated child,
check each model against TensorRT's plan checks, and write ``conformance.json`` / ``.md``.

The child (``targets.tflite.conformance:run_cases``) logs every case before and after it runs,
so a case that crashes or hangs the converter costs that case only: it is recorded with the
reason and the child is started again after it.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from pipeline.conformance.cases import FAST_CASES, Case, family, vision_cases
from pipeline.conformance.expected import expected_failure
from pipeline.conformance.freeze import frozen_case
from pipeline.isolate import IsolatedCallError, run_isolated

#: seconds a child may take: its TensorFlow start, then per case still to run
START_S, PER_CASE_S = 90.0, 60.0
CHILD = "targets.tflite.conformance:run_cases"


def _read_progress(path: Path) -> tuple[dict[str, dict[str, Any]], str | None]:
    """The results logged so far, and the case that started without a result (if any)."""
    results: dict[str, dict[str, Any]] = {}
    started: str | None = None
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:   # a line cut short by the crash
                continue
            if entry.get("event") == "start":
                started = entry["name"]
            elif entry.get("event") == "result":
                results[entry["name"]] = {k: v for k, v in entry.items()
                                          if k not in ("name", "event")}
                started = None
    return results, started


def convert_all(cases: list[dict[str, Any]], work: Path,
                runner: Callable[..., Any] = run_isolated) -> dict[str, dict[str, Any]]:
    """Every case through the child; a crash or a hang is the running case's failure."""
    progress = work / "progress.jsonl"
    results: dict[str, dict[str, Any]] = {}
    pending = list(cases)
    while pending:
        try:
            runner(CHILD, {"cases": pending, "progress": str(progress)}, stage="conformance",
                   model=f"{len(pending)} ONNX node tests",
                   timeout_s=START_S + PER_CASE_S * len(pending), what="conformance runner")
            problem = None
        except IsolatedCallError as exc:
            problem = exc.problem
        logged, started = _read_progress(progress)
        results.update(logged)
        if problem is not None:
            culprit = started or next((c["name"] for c in pending if c["name"] not in results),
                                      None)
            if culprit is not None:
                results[culprit] = {"status": "fail", "stage": "run",
                                    "reason": f"the converter process failed: {problem}"}
        remaining = [c for c in pending if c["name"] not in results]
        if len(remaining) == len(pending):   # no progress at all: record and stop
            for case in remaining:
                results[case["name"]] = {"status": "fail", "stage": "run",
                                         "reason": f"not run: {problem}"}
            break
        pending = remaining
    return results


def tensorrt_plan(model_path: Path) -> dict[str, Any]:
    """TensorRT's parser checks (targets.tensorrt.check) on the frozen model, for the newest
    TensorRT release they know (the node tests use opsets up to 24: TensorRT 10.15's range)."""
    import onnx

    from targets.tensorrt.check import MAX_OPSET, check_onnx_for_tensorrt

    newest = max(MAX_OPSET)
    check = check_onnx_for_tensorrt(onnx.load(str(model_path)), int8=False, trt_version=newest)
    return {"ok": check.ok, "problems": list(check.problems),
            "tensorrt_version_checked": ".".join(map(str, newest))}


def judged(case: Case, tflite: dict[str, Any]) -> dict[str, Any]:
    """The case's TFLite result with the expected-failure list applied."""
    expected = expected_failure(case.name)
    result = dict(tflite)
    if result["status"] == "pass":
        result["expected_fail"] = expected is not None   # listed but passing: the list is stale
    elif expected is not None:
        result.update(status="expected-fail", expected_reason=expected)
    return result


def run_suite(out_dir: Path, fast: bool = False, names: list[str] | None = None,
              runner: Callable[..., Any] = run_isolated) -> dict[str, Any]:
    """Run the suite (all vision cases, the fast subset, or ``names``) and write the reports."""
    from pipeline.conformance.report import summary, write_reports
    from pipeline.machine import describe_machine

    chosen = vision_cases()
    if fast:
        chosen = [c for c in chosen if c.name in FAST_CASES]
    if names:
        chosen = [c for c in chosen if c.name in set(names)]
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="mobile-export-conformance-"))
    try:
        frozen = {c.name: frozen_case(c, work / c.name) for c in chosen}
        tflite = convert_all(list(frozen.values()), work, runner)
        rows = [{"name": c.name, "family": family(c), "ops": list(c.ops),
                 "rtol": c.rtol, "atol": c.atol, "tflite": judged(c, tflite[c.name]),
                 "tensorrt_plan": tensorrt_plan(Path(frozen[c.name]["model"]))}
                for c in chosen]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    from importlib import metadata

    document = {"suite": "onnx.backend.test node tests, vision op set",
                "subset": "fast" if fast else ("named" if names else "full"),
                "versions": {d: metadata.version(d) for d in ("onnx", "onnx2tf", "tensorflow",
                                                              "ai-edge-litert")},
                "machine": describe_machine(), "summary": summary(rows), "cases": rows}
    write_reports(document, out_dir)
    return document
