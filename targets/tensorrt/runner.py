"""TensorRT's runtime here: is TensorRT importable, the engine runner (Polygraphy's TrtRunner)
and GPU latency with CUDA events."""
from __future__ import annotations

import ctypes
import importlib.util
import re
from pathlib import Path
from typing import Any

import numpy as np

from targets.base import Runner

#: the oldest TensorRT release supported (here, not in .check, so that checking for TensorRT
#: does not import onnx)
MIN_TENSORRT = (10, 0)


def _import_tensorrt() -> tuple[Any, str | None]:
    """(the tensorrt module, None), or (None, why it is not importable). Nothing is imported
    when the package is absent."""
    if importlib.util.find_spec("tensorrt") is None:
        return None, "tensorrt is not importable (not installed)"
    try:
        import tensorrt as trt
    except Exception as exc:  # a stub or a broken install
        return None, f"tensorrt is not importable ({type(exc).__name__}: {exc})"
    return trt, None


def tensorrt_version() -> tuple[int, ...] | None:
    """The importable TensorRT's version, or None."""
    trt, _ = _import_tensorrt()
    return tuple(int(x) for x in re.findall(r"\d+", trt.__version__)[:3]) if trt else None


def tensorrt_problem() -> str | None:
    """None when TensorRT >= 10 is importable, else what is wrong with it."""
    trt, problem = _import_tensorrt()
    if problem:
        return problem
    if tensorrt_version()[:2] < MIN_TENSORRT:
        return f"TensorRT {trt.__version__} is too old: version 10 or newer is needed"
    return None




class TensorrtRunner(Runner):
    """A serialized engine on TensorRT through Polygraphy's ``TrtRunner``. Feeds are float32 NCHW;
    a batch larger than the engine profile's maximum runs in chunks."""

    runtime = "tensorrt"
    runtime_modules = ("tensorrt",)

    def __init__(self, path: Path, threads: int = 1) -> None:
        super().__init__(threads)
        self.path = Path(path)
        self._runner = None
        self.max_batch = 1

    def activate_impl(self) -> None:  # pragma: no cover - needs an NVIDIA GPU and TensorRT
        from polygraphy.backend.trt import EngineFromBytes, TrtRunner

        self._runner = TrtRunner(EngineFromBytes(self.path.read_bytes()))
        self._runner.activate()
        engine = self._runner.engine
        name = self.input_names_impl()[0]
        self.max_batch = int(engine.get_tensor_profile_shape(name, 0)[2][0])

    def deactivate_impl(self) -> None:  # pragma: no cover - needs an NVIDIA GPU and TensorRT
        if self._runner is not None:
            self._runner.deactivate()
        self._runner = None

    def input_names_impl(self) -> list[str]:  # pragma: no cover - needs an NVIDIA GPU
        return list(self._runner.get_input_metadata().keys())

    @property
    def trt_runner(self) -> Any:
        return self._runner

    def infer_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:  # pragma: no cover
        (name, array), = feeds.items()   # at most max_batch samples (the base class chunks)
        outputs = self._runner.infer({name: np.ascontiguousarray(array, dtype=np.float32)})
        return {key: np.array(value, dtype=np.float32) for key, value in outputs.items()}


def cuda_event_latency(runner: TensorrtRunner, batch: np.ndarray, warmup: int,
                       runs: int) -> dict[str, Any]:  # pragma: no cover - needs an NVIDIA GPU
    """Median / p90 / min of GPU time per inference, measured with CUDA events on the runner's
    stream; the input stays on the device, so host copies are not counted."""
    from polygraphy import cuda

    from pipeline.bench import LatencyStats

    lib = cuda.wrapper().handle
    trt_runner = runner.trt_runner
    stream = ctypes.c_void_p(trt_runner.stream.ptr)
    start, end = ctypes.c_void_p(), ctypes.c_void_p()
    for event in (start, end):
        if lib.cudaEventCreate(ctypes.byref(event)) != 0:
            raise RuntimeError("cudaEventCreate failed")
    device_input = cuda.DeviceArray(shape=batch.shape, dtype=np.float32)
    try:
        device_input.copy_from(np.ascontiguousarray(batch, dtype=np.float32))
        feed = {runner.input_names()[0]: device_input}
        for _ in range(warmup):
            trt_runner.infer(feed, copy_outputs_to_host=False)
        samples = []
        elapsed = ctypes.c_float()
        for _ in range(runs):
            lib.cudaEventRecord(start, stream)
            trt_runner.infer(feed, copy_outputs_to_host=False)
            lib.cudaEventRecord(end, stream)
            lib.cudaEventSynchronize(end)
            lib.cudaEventElapsedTime(ctypes.byref(elapsed), start, end)
            samples.append(float(elapsed.value))
    finally:
        device_input.free()
        lib.cudaEventDestroy(start)
        lib.cudaEventDestroy(end)
    record = LatencyStats.from_samples(runner, len(batch), samples, warmup=warmup).to_json()
    record["timer"] = "CUDA events (GPU time, input resident on the device)"
    return record
