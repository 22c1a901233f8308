"""The physical floor of a model's latency on this CPU: its MACs at the measured sgemm peak.

A dense single-precision matrix product is the fastest thing a CPU core does with floats; its
rate on one thread (measured here, not read from a datasheet) bounds what any fp32 runtime can
reach for a model's multiply-accumulates. The peak is the faster of two sgemm kernels: numpy's
OpenBLAS and ONNX Runtime's own MLAS (a one-node MatMul graph). On the AMD EPYC Zen 4 seen
here OpenBLAS picks its Haswell (AVX2) kernels and reached 103-114 GFLOP/s, MLAS (AVX-512)
190-207 (best of 7, one thread, its CPU time equal to its wall time): with OpenBLAS alone, ONNX Runtime and XNNPACK ran MobileNetV2 "faster than the
floor" (0.83x). ``make bench`` reports
ONNX Runtime's fp32 latency against it: a ratio of 3 means 3x the time the MACs alone need.
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
    """GFLOP/s of a ``size``² float32 matrix product on ``threads`` threads: the faster of
    numpy's BLAS (limited with threadpoolctl) and ONNX Runtime's MLAS, each the best of
    ``repeats`` products after two warm-ups (a peak: noise only ever slows a product down;
    MLAS's median moved between 135 and 182 GFLOP/s from run to run); both rates are kept
    under ``kernels``."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    kernels = [_numpy_sgemm(a, b, threads, repeats), _ort_sgemm(a, b, threads, repeats)]
    best = max(kernels, key=lambda k: k["gflops"])
    return {"gflops": best["gflops"], "size": size, "threads": threads, "repeats": repeats,
            "library": best["library"], "kernels": kernels}


def _best_rate(product: Any, size: int, repeats: int) -> float:
    for _ in range(2):
        product()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        product()
        seconds.append(time.perf_counter() - start)
    return round(2 * size ** 3 / min(seconds) / 1e9, 1)


def _numpy_sgemm(a: np.ndarray, b: np.ndarray, threads: int, repeats: int) -> dict[str, Any]:
    from threadpoolctl import threadpool_info, threadpool_limits

    out = np.empty_like(a)
    with threadpool_limits(limits=threads, user_api="blas"):
        gflops = _best_rate(lambda: np.matmul(a, b, out=out), len(a), repeats)
    blas = next((f"{i['internal_api']} {i.get('version') or ''} ({i.get('architecture')})"
                 for i in threadpool_info() if i.get("user_api") == "blas"), "numpy BLAS")
    return {"gflops": gflops, "library": f"numpy.matmul, {blas}"}


def _ort_sgemm(a: np.ndarray, b: np.ndarray, threads: int, repeats: int) -> dict[str, Any]:
    import onnxruntime as ort
    from onnx import TensorProto, helper

    n = len(a)
    spec = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [n, n]) for name in "abc"]
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "sgemm",
                              spec[:2], spec[2:])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    gflops = _best_rate(lambda: session.run(None, {"a": a, "b": b}), n, repeats)
    return {"gflops": gflops, "library": f"onnxruntime {ort.__version__} MatMul (MLAS)"}


def floor_figure(macs: int, median_ms: float, peak: dict[str, Any]) -> dict[str, Any]:
    """``{floor_ms, median_ms, over_floor}``: the MACs' time at the sgemm peak and the measured
    median's multiple of it."""
    floor_ms = 2 * macs / (peak["gflops"] * 1e9) * 1e3
    return {"macs": macs, "sgemm_gflops": peak["gflops"], "floor_ms": round(floor_ms, 3),
            "median_ms": median_ms, "over_floor": round(median_ms / floor_ms, 2)}
