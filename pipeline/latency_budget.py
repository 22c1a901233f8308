"""``--latency-budget-ms``: a latency gate the user chose, judged on each deployment node's
measured median (batch 1, on the node's own runtime, this machine).

A node over the budget is marked (``latency_budget`` in its report entry, verdict ``fail``), is
not published, and makes the run exit with code 1; the nodes downstream of it are judged on
their own (an ONNX model too slow on ONNX Runtime does not hold back its TFLite int8 model that
meets the budget). A node whose latency was not measured here (Core ML off macOS, TensorRT
without a GPU) is ``unverified``, with the reason; the PyTorch reference nodes are not judged.
"""
from __future__ import annotations

from typing import Any, Iterable

from pipeline.graph import NodeResult

#: nodes of these targets are the reference, not something to deploy
REFERENCE_TARGETS = ("torch", "reference")


def judge_latency(latency: dict[str, Any] | None, limit_ms: float) -> dict[str, Any]:
    """The budget's verdict on one node's latency record."""
    median = (latency or {}).get("median_ms")
    entry: dict[str, Any] = {"limit_ms": limit_ms, "median_ms": median,
                             "runtime": (latency or {}).get("runtime")}
    if not isinstance(median, (int, float)):
        why = (latency or {}).get("reason") or "no latency was measured for this node"
        return {**entry, "verdict": "unverified", "reason": f"not judged: {why}"}
    if median > limit_ms:
        return {**entry, "verdict": "fail",
                "reason": f"median {median:.3g} ms > budget {limit_ms:g} ms "
                          f"({median / limit_ms:.2f}x)"}
    return {**entry, "verdict": "pass",
            "reason": f"median {median:.3g} ms <= budget {limit_ms:g} ms"}


def budget_verdicts(results: Iterable[NodeResult],
                    limit_ms: float | None) -> dict[str, dict[str, Any]]:
    """Node name -> its ``latency_budget`` entry, for the deployment nodes that produced an
    artifact (empty without a budget)."""
    if limit_ms is None:
        return {}
    return {r.stage.name: judge_latency(r.record.get("latency"), limit_ms) for r in results
            if r.stage.target not in REFERENCE_TARGETS and r.status in ("ran", "cached")}


def missed(verdicts: dict[str, dict[str, Any]]) -> set[str]:
    """The nodes over the budget."""
    return {name for name, entry in verdicts.items() if entry["verdict"] == "fail"}
