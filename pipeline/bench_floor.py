"""The physical floor of a model's latency on this CPU: its MACs at the measured sgemm peak.

A dense single-precision matrix product is the fastest thing a CPU core does with floats; its
rate on one thread (measured here, with the BLAS torch ships, not read from a datasheet) bounds
what any fp32 runtime can reach for a model's multiply-accumulates. ``make bench`` reports ONNX
Runtime's fp32 latency against that floor: a ratio of 3 means 3x the time the MACs alone need.
Depthwise convolutions are memory-bound and cannot reach the peak, so no runtime reaches 1.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np

SGEMM_SIZE = 2048
SGEMM_REPEATS = 7


def sgemm_peak(threads: int = 1, size: int = SGEMM_SIZE,
               repeats: int = SGEMM_REPEATS) -> dict[str, Any]:
    """Median GFLOP/s of a ``size``² float32 matrix product on ``threads`` BLAS threads, after
    two warm-up products. numpy's OpenBLAS (limited with threadpoolctl): on the AMD EPYC seen
    here it reached 94 GFLOP/s on one thread at 2048², torch's MKL 69 (MKL takes a slower path
    on non-Intel CPUs), so OpenBLAS is the better measure of the core's peak."""
    from threadpoolctl import threadpool_info, threadpool_limits

    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    out = np.empty((size, size), np.float32)
    with threadpool_limits(limits=threads, user_api="blas"):
        for _ in range(2):
            np.matmul(a, b, out=out)
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            np.matmul(a, b, out=out)
            seconds.append(time.perf_counter() - start)
    blas = next((f"{i['internal_api']} {i.get('version') or ''} ({i.get('architecture')})"
                 for i in threadpool_info() if i.get("user_api") == "blas"), "numpy BLAS")
    median = float(np.median(seconds))
    return {"gflops": round(2 * size ** 3 / median / 1e9, 1), "size": size, "threads": threads,
            "repeats": repeats, "library": f"numpy.matmul, {blas}"}


def floor_figure(macs: int, median_ms: float, peak: dict[str, Any]) -> dict[str, Any]:
    """``{floor_ms, median_ms, over_floor}``: the MACs' time at the sgemm peak and the measured
    median's multiple of it."""
    floor_ms = 2 * macs / (peak["gflops"] * 1e9) * 1e3
    return {"macs": macs, "sgemm_gflops": peak["gflops"], "floor_ms": round(floor_ms, 3),
            "median_ms": median_ms, "over_floor": round(median_ms / floor_ms, 2)}
