"""Pareto fronts on hand-made points and rows."""
from __future__ import annotations

import math

from pipeline.sweep.pareto import ACCURACY, SIZE, mark_pareto, pareto_front


def test_dominated_points_are_excluded_and_the_front_is_cheapest_first() -> None:
    points = [(0.70, 10.0),   # 0: front
              (0.60, 12.0),   # 1: dominated by 0 (less accurate, slower)
              (0.80, 20.0),   # 2: front
              (0.65, 5.0),    # 3: front (fastest)
              (0.80, 25.0),   # 4: dominated by 2 (as accurate, slower)
              (0.70, 10.0 + 1e-9)]  # 5: dominated by 0 (as accurate, a hair slower)
    assert pareto_front(points) == [3, 0, 2]


def test_identical_points_are_all_kept_but_equal_latency_lower_accuracy_is_not() -> None:
    points = [(0.7, 10.0), (0.7, 10.0), (0.6, 10.0), (0.9, 30.0), (0.9, 30.0)]
    assert pareto_front(points) == [0, 1, 3, 4]


def test_points_missing_a_value_are_excluded() -> None:
    points = [(None, 1.0), (0.99, None), (math.nan, 0.5), (0.5, math.inf), (0.5, 8.0)]
    assert pareto_front(points) == [4]
    assert pareto_front([]) == []
    assert pareto_front([(None, None)]) == []


def _node(acc: float | None, median: float | None, *, verdict: str = "pass",
          size: int = 1000) -> dict:
    return {"verdict": verdict, "size_bytes": size, "pareto": None,
            "accuracy": None if acc is None else {"value": acc, "ci_low": acc - 0.01,
                                                  "ci_high": acc + 0.01},
            "latency_ms": None if median is None else {"median": median, "p90": median * 1.1}}


def _row(job: str, status: str = "ok", **nodes: dict) -> dict:
    return {"job": job, "status": status,
            "nodes": {key.replace("_", ":"): node for key, node in nodes.items()}}


def test_mark_pareto_keeps_each_node_key_independent() -> None:
    rows = [_row("a", tflite_int8=_node(0.70, 5.0), onnx_fp32=_node(0.75, 9.0)),
            _row("b", tflite_int8=_node(0.72, 6.0), onnx_fp32=_node(0.74, 3.0)),
            _row("c", tflite_int8=_node(0.60, 7.0), onnx_fp32=_node(0.76, 20.0))]
    axes = mark_pareto(rows)
    assert axes == {"onnx:fp32": ACCURACY, "tflite:int8": ACCURACY}
    flags = {(r["job"], k): n["pareto"] for r in rows for k, n in r["nodes"].items()}
    # tflite: c is dominated by a and b; onnx: every point trades accuracy for latency
    assert flags == {("a", "tflite:int8"): True, ("b", "tflite:int8"): True,
                     ("c", "tflite:int8"): False, ("a", "onnx:fp32"): True,
                     ("b", "onnx:fp32"): True, ("c", "onnx:fp32"): True}


def test_only_passing_nodes_of_ok_or_gate_failed_rows_compete() -> None:
    rows = [_row("fast-but-failed", tflite_int8=_node(0.90, 1.0, verdict="fail")),
            _row("unverified", tflite_int8=_node(0.95, 1.0, verdict="unverified")),
            _row("timed-out", "timeout", tflite_int8=_node(0.99, 0.5)),
            _row("gate", "gate_failed", tflite_int8=_node(0.70, 4.0)),
            _row("slow", tflite_int8=_node(0.60, 8.0))]
    mark_pareto(rows)
    flags = {r["job"]: r["nodes"]["tflite:int8"]["pareto"] for r in rows}
    assert flags == {"fast-but-failed": False, "unverified": False, "timed-out": False,
                     "gate": True, "slow": False}


def test_without_any_accuracy_the_front_is_size_against_latency() -> None:
    rows = [_row("small-slow", tflite_fp32=_node(None, 9.0, size=100)),
            _row("big-fast", tflite_fp32=_node(None, 2.0, size=900)),
            _row("big-slow", tflite_fp32=_node(None, 9.5, size=900)),
            _row("untimed", tflite_fp32=_node(None, None, size=50))]
    assert mark_pareto(rows) == {"tflite:fp32": SIZE}
    assert [r["job"] for r in rows if r["nodes"]["tflite:fp32"]["pareto"]] == \
        ["small-slow", "big-fast"]
