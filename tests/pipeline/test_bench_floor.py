"""The sgemm floor make bench reports ONNX Runtime fp32 against."""
from __future__ import annotations

from pipeline.bench_floor import floor_figure, sgemm_peak


def test_floor_is_the_macs_at_the_peak_rate() -> None:
    figure = floor_figure(300_000_000, 9.0, {"gflops": 100.0})
    assert figure["floor_ms"] == 6.0 and figure["over_floor"] == 1.5


def test_sgemm_peak_measures_one_thread_of_the_blas() -> None:
    peak = sgemm_peak(threads=1, size=256, repeats=3)
    assert peak["gflops"] > 0 and peak["threads"] == 1 and peak["size"] == 256
    assert peak["library"].startswith("numpy.matmul")
