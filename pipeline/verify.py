"""Check one node: parity against the reference, accuracy on labelled data when it exists, and
latency on the node's own runtime."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.accuracy import accuracy_failures, accuracy_record
from pipeline.bench import benchmark
from pipeline.config import BenchConfig
from pipeline.parity import ParityResult, Tolerance, compare_outputs, judge, run_outputs
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


#: images per call when measuring accuracy: a task-level figure, not a parity one, so it need not
#: run at the deployed batch of 1; runtimes with a fixed batch still run one image at a time
#: (Runner.max_batch chunks the feed)
EVAL_BATCH = 32


def evaluate(runner: Runner, reference: Reference) -> dict[str, Any] | None:
    """Accuracy of an active runner on the reference's labelled evaluation set (None without)."""
    evaluation = reference.evaluation
    if evaluation is None:
        return None
    outputs = run_outputs(runner, evaluation.as_parity_inputs(), batch_size=EVAL_BATCH)
    logits = next(iter(outputs.values()))
    record = accuracy_record(logits, evaluation.labels, evaluation.logits)
    record["source"] = evaluation.source
    return record


@dataclass
class Checks:
    """A node's check results, typed until :meth:`to_record` writes them into its cached record:
    the parity verdict (with the accuracy gate folded in), the accuracy on labelled data and the
    latency on the node's own runtime."""

    parity: ParityResult
    accuracy: dict[str, Any] | None = None
    latency: dict[str, Any] | None = None
    #: the same checks per configuration where a runtime has several (Core ML compute units)
    per_unit: dict[str, Checks] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.parity.verdict == "pass"

    @property
    def failed(self) -> bool:
        return self.parity.verdict == "fail"

    def to_record(self) -> dict[str, Any]:
        """The record's ``parity``, ``accuracy``, ``latency`` (and ``compute_units``) keys."""
        record: dict[str, Any] = {"parity": self.parity.to_json()}
        if self.accuracy is not None:
            record["accuracy"] = self.accuracy
        if self.latency is not None:
            record["latency"] = self.latency
        if self.per_unit:
            record["compute_units"] = {unit: checks.parity.to_json()
                                       for unit, checks in self.per_unit.items()}
        return record


def gate_accuracy(parity: ParityResult, accuracy: dict[str, Any] | None,
                  max_drop: float | None) -> ParityResult:
    """Fold the accuracy gate into the parity verdict (a failed gate makes the node fail)."""
    failures = accuracy_failures(accuracy, max_drop) if accuracy is not None else []
    return parity.failed_with(failures) if failures else parity


IN_DISTRIBUTION = ("calib", "eval")


def judge_parity(reference: Reference, outputs: dict[str, np.ndarray],
                 tol: Tolerance) -> ParityResult:
    """Judge on every input, or only on the in-distribution ones when the tolerance says so
    (the verdict on all inputs is then kept under ``all_inputs`` for the record)."""
    everything = judge(compare_outputs(reference.outputs, outputs), tol, len(reference.inputs))
    kinds = np.asarray(reference.inputs.kinds)
    chosen = np.flatnonzero(np.isin(kinds, IN_DISTRIBUTION))
    if not tol.in_distribution_only or len(chosen) == 0:
        return everything
    subset = judge(compare_outputs({k: v[chosen] for k, v in reference.outputs.items()},
                                   {k: v[chosen] for k, v in outputs.items()}), tol, len(chosen))
    subset.reason = (f"judged on the {len(chosen)} in-distribution inputs (calibration/"
                     f"evaluation images): {subset.reason}")
    subset.all_inputs = everything
    return subset


def check_gates(runner: Runner, reference: Reference, tol: Tolerance,
                max_accuracy_drop: float | None = None) -> Checks:
    """Parity (with the accuracy gate folded in) and accuracy of a runner, no latency."""
    with contextlib.nullcontext(runner) if runner.is_active else runner:
        outputs = run_outputs(runner, reference.inputs)
        parity = judge_parity(reference, outputs, tol)
        accuracy = evaluate(runner, reference)
    return Checks(gate_accuracy(parity, accuracy, max_accuracy_drop), accuracy)


def check_node(runner: Runner, reference: Reference, tol: Tolerance, bench: BenchConfig,
               max_accuracy_drop: float | None = None) -> Checks:
    """Parity, accuracy and latency of one runner, for a node's cached record."""
    with runner:
        checks = check_gates(runner, reference, tol, max_accuracy_drop)
        checks.latency = latency_record(runner, reference, bench)
    return checks
