"""Check one node: parity against the reference, accuracy on labelled data when it exists, and
latency on the node's own runtime."""
from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from pipeline.accuracy import accuracy_failures, accuracy_record
from pipeline.bench import benchmark
from pipeline.config import BenchConfig
from pipeline.parity import Tolerance, compare_outputs, judge, run_outputs
from pipeline.reference import Reference
from targets.base import Runner


def latency_record(runner: Runner, reference: Reference, bench: BenchConfig) -> dict[str, Any]:
    """Batch-1 latency and batch-N throughput with the common protocol (runner must be active)."""
    single = reference.inputs.sample(0)
    one = benchmark(runner, {runner.input_names()[0]: single}, warmup=bench.warmup, runs=bench.runs)
    record = one.to_json()
    if bench.batch > 1:
        batch = np.repeat(single, bench.batch, axis=0)
        many = benchmark(runner, {runner.input_names()[0]: batch}, warmup=bench.warmup,
                         runs=bench.runs)
        record["throughput"] = many.to_json()
    return record


def evaluate(runner: Runner, reference: Reference) -> dict[str, Any] | None:
    """Accuracy of an active runner on the reference's labelled evaluation set (None without)."""
    evaluation = reference.evaluation
    if evaluation is None:
        return None
    outputs = run_outputs(runner, evaluation.as_parity_inputs())
    logits = next(iter(outputs.values()))
    record = accuracy_record(logits, evaluation.labels, evaluation.logits)
    record["source"] = evaluation.source
    return record


def gate_accuracy(parity: dict[str, Any], accuracy: dict[str, Any] | None,
                  max_drop: float | None) -> dict[str, Any]:
    """Fold the accuracy gate into the parity verdict (a failed gate makes the node fail)."""
    if accuracy is None:
        return parity
    failures = accuracy_failures(accuracy, max_drop)
    if not failures:
        return parity
    return {**parity, "verdict": "fail", "failures": parity.get("failures", []) + failures,
            "reason": "; ".join(failures)}


IN_DISTRIBUTION = ("calib", "eval")


def judge_parity(reference: Reference, outputs: dict[str, np.ndarray],
                 tol: Tolerance) -> dict[str, Any]:
    """Judge on every input, or only on the in-distribution ones when the tolerance says so
    (the verdict on all inputs is then kept under ``all_inputs`` for the record)."""
    everything = judge(compare_outputs(reference.outputs, outputs), tol, len(reference.inputs))
    kinds = np.asarray(reference.inputs.kinds)
    chosen = np.flatnonzero(np.isin(kinds, IN_DISTRIBUTION))
    if not tol.in_distribution_only or len(chosen) == 0:
        return everything.to_json()
    subset = judge(compare_outputs({k: v[chosen] for k, v in reference.outputs.items()},
                                   {k: v[chosen] for k, v in outputs.items()}), tol, len(chosen))
    result = subset.to_json()
    result["reason"] = (f"judged on the {len(chosen)} in-distribution inputs (calibration/"
                        f"evaluation images): {result['reason']}")
    whole = everything.to_json()
    result["all_inputs"] = {k: whole[k] for k in ("verdict", "cosine", "top1_agreement",
                                                  "max_rel", "n_inputs")}
    return result


def check_gates(runner: Runner, reference: Reference, tol: Tolerance,
                max_accuracy_drop: float | None = None) -> dict[str, Any]:
    """Parity (with the accuracy gate folded in) and accuracy records of a runner, no latency."""
    with contextlib.nullcontext(runner) if runner.is_active else runner:
        outputs = run_outputs(runner, reference.inputs)
        parity = judge_parity(reference, outputs, tol)
        accuracy = evaluate(runner, reference)
    record = {"parity": gate_accuracy(parity, accuracy, max_accuracy_drop)}
    if accuracy is not None:
        record["accuracy"] = accuracy
    return record


def check_node(runner: Runner, reference: Reference, tol: Tolerance, bench: BenchConfig,
               max_accuracy_drop: float | None = None) -> dict[str, Any]:
    """Parity, accuracy and latency records of one runner, for a node's cached record."""
    with runner:
        record = check_gates(runner, reference, tol, max_accuracy_drop)
        record["latency"] = latency_record(runner, reference, bench)
    return record
