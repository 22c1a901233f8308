"""Pareto fronts of a sweep: which design points no other point beats on both accuracy and latency.

A point dominates another when it is at least as accurate and at least as fast, and strictly better
on one of the two. Fronts are drawn per node key (``"tflite:int8"``): comparing a TFLite int8 model
with a Core ML fp16 one says nothing about either runtime, and each key's figures come from its own
runtime.

Which nodes take part (:func:`eligible`): a node whose verdict is ``pass``, in a row whose status is
``ok`` or ``gate_failed``. A ``gate_failed`` row is one where some *other* node of the job missed its
gate; this node's own figures were measured and judged, so it competes. Nodes that failed or could
not be verified (``unverified``), and rows that failed, timed out or were interrupted, never do.

Without any accuracy for a key (no labelled dataset), the front of that key is drawn on size against
latency instead (smaller and faster both win), and :func:`mark_pareto` says so per key.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

#: row statuses whose passing nodes take part in fronts and recommendations
ELIGIBLE_STATUSES = ("ok", "gate_failed")
#: what a key's front was drawn on
ACCURACY, SIZE = "accuracy", "size"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def pareto_front(points: Sequence[tuple[float | None, float | None]]) -> list[int]:
    """Indices of the non-dominated ``(value to maximise, cost to minimise)`` points, cheapest
    first. Identical points are all kept; a point missing either value (None, NaN) is left out.

    Hand-written on purpose: sort by cost, then one scan keeping each point that beats the best
    value seen so far — O(n log n) in a dozen lines, no library needed for this.
    """
    valid = [(cost, -value, index) for index, (value, cost) in enumerate(points)
             if _number(value) is not None and _number(cost) is not None]
    front: list[int] = []
    best: float | None = None
    last: tuple[float, float] | None = None
    for cost, negative, index in sorted(valid):      # cheapest first; most valuable first on a tie
        value = -negative
        if best is None or value > best:
            best, last = value, (cost, value)
            front.append(index)
        elif (cost, value) == last:                  # identical to the last point kept: a tie
            front.append(index)
    return front


def accuracy_of(node: dict[str, Any]) -> float | None:
    """The node's measured accuracy (0..1), or None."""
    return _number((node.get("accuracy") or {}).get("value"))


def median_of(node: dict[str, Any]) -> float | None:
    """The node's median latency in ms, or None."""
    return _number((node.get("latency_ms") or {}).get("median"))


def size_of(node: dict[str, Any]) -> float | None:
    """The node's artifact size in bytes, or None."""
    return _number(node.get("size_bytes"))


def eligible(row: dict[str, Any], node: dict[str, Any]) -> bool:
    """Whether this node of this row competes in fronts and recommendations (module docstring)."""
    return row.get("status") in ELIGIBLE_STATUSES and node.get("verdict") == "pass"


def node_keys(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Every node key that appears in any row, sorted."""
    return sorted({key for row in rows for key in (row.get("nodes") or {})})


def competitors(rows: Sequence[dict[str, Any]], key: str) -> Iterator[tuple[dict, dict]]:
    """``(row, node)`` for each eligible node of ``key``."""
    for row in rows:
        node = (row.get("nodes") or {}).get(key)
        if node is not None and eligible(row, node):
            yield row, node


def mark_pareto(rows: Sequence[dict[str, Any]]) -> dict[str, str]:
    """Set each node's ``pareto`` flag (in place) per node key; returns what each key's front
    was drawn on: ``"accuracy"`` (accuracy against median latency) or ``"size"`` (artifact
    size against median latency, where no competing node of the key has an accuracy)."""
    for row in rows:
        for node in (row.get("nodes") or {}).values():
            node["pareto"] = False
    axes: dict[str, str] = {}
    for key in node_keys(rows):
        nodes = [node for _, node in competitors(rows, key)]
        by_accuracy = any(accuracy_of(node) is not None for node in nodes)
        axes[key] = ACCURACY if by_accuracy else SIZE
        points = [(accuracy_of(n) if by_accuracy else _negate(size_of(n)), median_of(n))
                  for n in nodes]
        for index in pareto_front(points):
            nodes[index]["pareto"] = True
    return axes


def _negate(value: float | None) -> float | None:
    return None if value is None else -value
