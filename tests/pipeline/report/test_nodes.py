"""Every report node comes from one builder, so every node has the schema's keys."""
from __future__ import annotations

import pytest

from pipeline.report.nodes import exit_code_for, node_entry, unavailable_node
from pipeline.report.schema import NodeEntry


def test_an_unavailable_target_is_a_complete_unverified_node() -> None:
    node = unavailable_node("tensorrt", "fp16", "no CUDA device")
    NodeEntry.model_validate(node)
    assert node["parity"]["verdict"] == "unverified" and node["latency"]["median_ms"] is None
    assert node["latency"]["reason"] == node["error"] == "no CUDA device"
    assert exit_code_for([node]) == 3


def test_the_builder_refuses_keys_outside_the_schema() -> None:
    with pytest.raises(TypeError, match="not report node keys"):
        node_entry(name="a", stage="s", target="t", precision="fp32", status="ok",
                   parity={"verdict": "pass"}, surprise=1)


def test_per_compute_unit_parity_reaches_the_report() -> None:
    node = node_entry(name="coreml:fp32", stage="convert_coreml", target="coreml",
                      precision="fp32", status="ok", parity={"verdict": "fail", "reason": "x"},
                      compute_units={"ALL": {"verdict": "fail"}})
    assert node["compute_units"] == {"ALL": {"verdict": "fail"}}
    assert exit_code_for([node, unavailable_node("tensorrt", "fp16", "no GPU")]) == 1
