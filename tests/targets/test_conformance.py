"""Every registered target: convert → parity → latency on a tiny model, or skip with its reason.

The same habit as Hugging Face optimum's exporters: a target without a passing tiny run fails here.
"""
from __future__ import annotations

import pytest

from pipeline.run import execute
from targets.base import registered_targets

TARGETS = sorted(registered_targets())


@pytest.mark.parametrize("name", TARGETS)
def test_target_converts_checks_and_times_a_tiny_model(name: str, tiny_config,
                                                       trained_tiny) -> None:
    target = registered_targets()[name]()
    reason = target.unavailable_reason()
    if reason:
        pytest.skip(f"{name} cannot run here: {reason}")
    # Float precisions on the untrained tiny model; int8 needs trained weights and is gated in
    # each target's own tests (tests/pipeline/stages/test_quantize.py, test_tflite, ...).
    precisions = tuple(p for p in target.precisions if p in ("fp32", "fp16"))
    # Trained weights: an untrained zoo model's logits (~1e-8) underflow in fp16.
    outcome = execute(tiny_config(targets=[name], precisions=list(precisions),
                                  weights=trained_tiny["weights"]))
    nodes = [n for n in outcome.report["nodes"] if n["target"] == name]
    assert {n["precision"] for n in nodes} == set(precisions)
    for node in nodes:
        assert node["parity"]["verdict"] == "pass", node["parity"]
        latency = node["latency"]
        if latency.get("verdict") == "unverified":     # e.g. Core ML off macOS
            assert latency["reason"]
        else:
            assert latency["median_ms"] > 0 and latency["runs"] >= 50
        assert node["artifact"]["bytes"] > 0
        assert f"/{target.platform}/" in node["artifact"]["path"]
