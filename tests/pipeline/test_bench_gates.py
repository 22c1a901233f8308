"""Verdicts of make bench's gated ratios: limits in both directions, and the CPU named when it
explains an int8 miss."""
from __future__ import annotations

from pipeline.bench_gates import figure, verdict

AVX2 = {"cpu_int8": {"flags": ["avx2", "fma"], "int8_dot_product": False}}
VNNI = {"cpu_int8": {"flags": ["avx2", "avx512_vnni"], "int8_dot_product": True}}


def test_an_int8_miss_names_the_cpu_when_it_lacks_an_int8_dot_product() -> None:
    missed = verdict("tflite_int8_over_tflite_fp32", 1.26, AVX2)
    assert missed.startswith("not met on this CPU") and "avx2, fma" in missed
    assert verdict("tflite_int8_over_tflite_fp32", 1.26, VNNI) == "not met"
    assert verdict("tflite_fp32_over_ort_fp32", 1.2, AVX2) == "not met"   # fp32: no excuse
    assert verdict("tflite_int8_over_tflite_fp32", 0.4, AVX2) == "met"
    # a speed-up gate is a lower limit
    assert verdict("fp32_over_pruned30", 1.68, AVX2) == "met"
    assert verdict("fp32_over_pruned30", 1.1, AVX2) == "not met"
    assert verdict("int8_over_fp32", 0.73, AVX2).startswith("not met on this CPU")


def test_figure_carries_value_limit_and_verdict() -> None:
    assert figure("int8_over_fp32", 0.4, VNNI) == {"value": 0.4, "limit": 0.45, "verdict": "met"}
