"""The Android bench's gated ratios and their verdicts (pure functions; the conversions it times
are covered by tests/targets/tflite/test_convert.py)."""
from __future__ import annotations

from targets.tflite.bench import android_figures
from pipeline.bench_gates import GATES

VNNI = {"cpu_int8": {"flags": ["avx2", "avx512_vnni"], "int8_dot_product": True}}


def _row(group: str, target: str, precision: str, median: float) -> dict:
    return {"group": group, "target": target, "precision": precision, "median_ms": median}


def test_ratios_are_medians_of_one_session_per_group_with_the_issue_limits() -> None:
    rows = [_row("full_size", "onnx", "fp32", 10.0), _row("full_size", "tflite", "fp32", 10.2),
            _row("full_size", "tflite", "int8", 4.0), _row("trained", "tflite", "fp32", 3.0),
            _row("trained", "tflite", "int8", 3.3), {"model": "torch row without a group"}]
    figures = android_figures(rows, VNNI)
    full, trained = figures["full_size"], figures["trained"]
    assert full["tflite_fp32_over_ort_fp32"] == {"value": 1.02, "limit": 1.05, "verdict": "met"}
    assert full["tflite_int8_over_tflite_fp32"] == {"value": 0.392, "limit": 0.45,
                                                     "verdict": "met"}
    assert set(trained) == {"tflite_int8_over_tflite_fp32"}    # no ORT case in that group
    assert trained["tflite_int8_over_tflite_fp32"]["verdict"] == "not met"
    assert GATES["tflite_fp32_over_ort_fp32"] == (1.05, "max")
    assert GATES["tflite_int8_over_tflite_fp32"] == (0.45, "max")


def test_native_ratios_compare_each_precision_with_its_keras_reference() -> None:
    rows = [_row("full_size", "tflite", "fp32", 10.1), _row("full_size", "tflite", "int8", 4.4),
            _row("full_size", "tflite-native", "fp32", 10.0),
            _row("full_size", "tflite-native", "int8", 4.0)]
    full = android_figures(rows, VNNI)["full_size"]
    assert full["tflite_fp32_over_native_fp32"] == {"value": 1.01, "limit": 1.02,
                                                     "verdict": "met"}
    assert full["tflite_int8_over_native_int8"]["value"] == 1.1
    assert full["tflite_int8_over_native_int8"]["verdict"] == "not met"
