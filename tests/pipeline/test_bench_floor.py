"""The sgemm floor make bench reports ONNX Runtime fp32 against."""
from __future__ import annotations

from pipeline.bench_floor import floor_figure, sgemm_peak


def test_floor_is_the_macs_at_the_peak_rate() -> None:
    figure = floor_figure(300_000_000, 9.0, {"gflops": 100.0})
    assert figure["floor_ms"] == 6.0 and figure["over_floor"] == 1.5


def test_sgemm_peak_is_the_faster_of_the_blas_and_onnx_runtime() -> None:
    peak = sgemm_peak(threads=1, size=256, repeats=3)
    assert peak["gflops"] > 0 and peak["threads"] == 1 and peak["size"] == 256
    libraries = [k["library"] for k in peak["kernels"]]
    assert libraries[0].startswith("numpy.matmul") and "MLAS" in libraries[1]
    assert peak["gflops"] == max(k["gflops"] for k in peak["kernels"])
    assert peak["library"] in libraries
