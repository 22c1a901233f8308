"""Build one TensorRT engine from an ONNX file with Polygraphy; runs in an isolated child process.

Called through :func:`pipeline.isolate.run_isolated` (``targets.tensorrt.build:build``) so that a
builder crash or hang becomes a typed error. The build configuration is the plan the
``tensorrt:plan`` node already wrote to the report (:func:`build_settings`), so what is built is
exactly what was checked and reported.

Polygraphy (NVIDIA's own tool) does the TensorRT API work: parsing the ONNX
(``NetworkFromOnnxPath``), the builder config (``CreateConfig``: precision flags, one optimisation
profile, workspace limit, optimisation level, timing cache) and the build
(``EngineBytesFromNetwork``). ``tensorrt`` is imported only here and in the runner.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

#: Builder flags per precision. fp32 clears TF32 (Polygraphy's default) so that fp32 parity is
#: fp32; fp16 and int8 allow fp16 so layers left in float (mixed precision) are not fp32.
PRECISION_FLAGS = {"fp32": {"fp16": False, "int8": False},
                   "fp16": {"fp16": True, "int8": False},
                   "int8": {"fp16": True, "int8": True}}


def build_settings(precision: str, input_name: str, chw: tuple[int, int, int], min_batch: int,
                   opt_batch: int, max_batch: int, workspace_mib: int,
                   optimization_level: int) -> dict[str, Any]:
    """The builder configuration of one engine, as JSON (written to the report and the plan)."""
    if not 1 <= min_batch <= opt_batch <= max_batch:
        raise ValueError(f"TensorRT profile needs 1 <= min_batch <= opt_batch <= max_batch, got "
                         f"{min_batch}, {opt_batch}, {max_batch}")
    return {"precision": precision, "flags": dict(PRECISION_FLAGS[precision], tf32=False),
            "quantization": "explicit (Q/DQ in the ONNX)" if precision == "int8" else None,
            "profile": {"input": input_name, "min": [min_batch, *chw], "opt": [opt_batch, *chw],
                        "max": [max_batch, *chw]},
            "workspace_mib": workspace_mib, "builder_optimization_level": optimization_level,
            "timing_cache": "persisted in the artifact cache, keyed by GPU and TensorRT version"}


def build(onnx_path: str, engine_path: str, settings: dict[str, Any],
          load_timing_cache: str | None, save_timing_cache: str) -> dict[str, Any]:
    """Build and serialize the engine; returns what the sidecar and report record about it."""
    import tensorrt as trt
    from polygraphy.backend.trt import CreateConfig, EngineBytesFromNetwork, \
        NetworkFromOnnxPath, Profile

    from targets.tensorrt.cuda import cuda_devices

    profile = settings["profile"]
    config = CreateConfig(
        **settings["flags"],
        profiles=[Profile().add(profile["input"], min=tuple(profile["min"]),
                                opt=tuple(profile["opt"]), max=tuple(profile["max"]))],
        memory_pool_limits={trt.MemoryPoolType.WORKSPACE: settings["workspace_mib"] * 2**20},
        builder_optimization_level=settings["builder_optimization_level"],
        load_timing_cache=load_timing_cache if load_timing_cache and Path(
            load_timing_cache).is_file() else None)
    started = time.perf_counter()
    serialized = EngineBytesFromNetwork(NetworkFromOnnxPath(onnx_path), config=config,
                                        save_timing_cache=save_timing_cache)()
    seconds = time.perf_counter() - started
    data = bytes(serialized)
    Path(engine_path).write_bytes(data)
    device = cuda_devices()[0]
    return {"tensorrt_version": trt.__version__, "gpu": device.name,
            "compute_capability": device.compute_capability, "build_s": round(seconds, 2),
            "engine_bytes": len(data), "settings": settings,
            "timing_cache_reused": bool(load_timing_cache and Path(load_timing_cache).is_file())}
