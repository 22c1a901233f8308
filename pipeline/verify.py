"""Check one node: parity against the reference and latency on the node's own runtime."""
from __future__ import annotations

from typing import Any

import numpy as np

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


def check_node(runner: Runner, reference: Reference, tol: Tolerance,
               bench: BenchConfig) -> dict[str, Any]:
    """Parity and latency records of one runner, for a node's cached record."""
    with runner:
        outputs = run_outputs(runner, reference.inputs)
        parity = judge(compare_outputs(reference.outputs, outputs), tol, len(reference.inputs))
        latency = latency_record(runner, reference, bench)
    return {"parity": parity.to_json(), "latency": latency}
