"""A node's checks stay typed (pipeline.verify.Checks, pipeline.parity.ParityResult) through the
accuracy gate, the merge of several runtime configurations and the record."""
from __future__ import annotations

import json

import numpy as np

from pipeline.parity import ParityResult, Tolerance, compare_outputs, judge
from pipeline.verify import Checks, gate_accuracy


def _judged(noise: float) -> ParityResult:
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(8, 10)).astype(np.float32)
    candidate = reference + noise * rng.normal(size=reference.shape).astype(np.float32)
    return judge(compare_outputs({"logits": reference}, {"logits": candidate}),
                 Tolerance(max_rel=0.05), 8)


def _accuracy(delta: float) -> dict:
    return {"value": 0.9 + delta, "ci_low": 0.8, "ci_high": 0.95, "delta": delta, "n": 100,
            "reference": 0.9, "top1_agreement": 0.95}


def test_a_passing_parity_fails_by_the_accuracy_gate_and_keeps_its_metrics() -> None:
    parity = _judged(0.0)
    assert parity.verdict == "pass"
    gated = gate_accuracy(parity, _accuracy(-0.05), max_drop=0.01)
    assert gated.verdict == "fail" and gated.reason.startswith("accuracy 85.00 %")
    assert gated.failures == [gated.reason]
    assert gated.metrics == parity.metrics and gated.tolerance == parity.tolerance
    assert parity.verdict == "pass", "the gate returns a new result, the input is unchanged"
    assert gate_accuracy(parity, _accuracy(-0.005), max_drop=0.01) is parity
    assert gate_accuracy(parity, None, max_drop=0.01) is parity


def test_merging_configurations_fails_if_any_fails_and_names_it() -> None:
    good, bad = _judged(0.0), _judged(1.0)
    assert bad.verdict == "fail"
    merged = good.worst_of({"compute units ALL": bad})
    assert merged.verdict == "fail"
    assert merged.reason == f"compute units ALL: {bad.reason}"
    assert merged.failures == [f"compute units ALL: {f}" for f in bad.failures]
    assert good.verdict == "pass" and good.failures == [], "the first result is unchanged"
    first_fails = bad.worst_of({"compute units ALL": good})
    assert first_fails.reason == bad.reason and first_fails.failures == bad.failures
    assert good.worst_of({"compute units ALL": _judged(0.0)}).verdict == "pass"


def test_the_record_is_the_typed_results_json() -> None:
    parity = _judged(0.0)
    parity.runtime = "some runtime"
    parity.all_inputs = _judged(1.0)
    latency = {"runtime": "x", "median_ms": 1.5}
    checks = Checks(parity, _accuracy(0.0), latency,
                    per_unit={"CPU_ONLY": Checks(_judged(0.0)), "ALL": Checks(_judged(1.0))})
    record = json.loads(json.dumps(checks.to_record()))
    assert set(record) == {"parity", "accuracy", "latency", "compute_units"}
    assert record["parity"]["runtime"] == "some runtime"
    assert record["parity"]["all_inputs"]["verdict"] == "fail"
    assert record["compute_units"]["ALL"]["verdict"] == "fail"
    assert record["latency"] == latency
    assert set(Checks(parity).to_record()) == {"parity"}
    assert checks.passed and not checks.failed
