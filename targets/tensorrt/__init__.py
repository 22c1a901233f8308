"""TensorRT target: fp16 and int8 engines (fp32 on request) from the trunk's ONNX, for NVIDIA GPUs.

Nodes:

* ``tensorrt:qdq`` (int8 only, runs everywhere): the fp32 ONNX quantized the way TensorRT's
  explicit quantization needs it (int8 activations with zero point 0, per-channel int8 weights),
  from the pipeline's one calibration set and QuantConfig. Its numbers are checked here on ONNX
  Runtime CPU, labelled as such: this is the graph TensorRT builds, not a TensorRT engine.
* ``tensorrt:plan`` (runs everywhere): the ONNX graphs handed to TensorRT validated for it
  (:mod:`targets.tensorrt.check`) and the builder configuration of every requested engine
  (:func:`targets.tensorrt.build.build_settings`), written to the report before any build.
* ``tensorrt:<precision>`` (only with a CUDA device and TensorRT >= 10): the engine, built by
  Polygraphy in an isolated process with a timing cache persisted in the artifact cache, then
  parity against the PyTorch reference and latency measured with CUDA events.

Without a GPU or without TensorRT the engine nodes are ``unavailable`` with one line naming what
is missing and how to get it; the run exits with code 3 unless a gate failed.
"""
from __future__ import annotations

import ctypes
import importlib.util
import re
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import StageError
from pipeline.graph import OutputFile, Stage, StageOutput
from targets.tensorrt.check import MIN_TENSORRT
from targets.base import Runner, Target, register

SIDECAR = "model.json"
ENGINE_WARNING = ("a TensorRT engine runs only on the GPU model (compute capability) and the "
                  "TensorRT version it was built with; rebuild it from model_int8_qdq.onnx / the "
                  "fp32 ONNX on the deployment machine otherwise")
HOW_TO_GET = ("TensorRT engines need an NVIDIA GPU with its driver and TensorRT >= 10 in this "
              "environment: `pip install tensorrt` (fetches NVIDIA's libraries from "
              "pypi.nvidia.com) or run in an NGC container (nvcr.io/nvidia/tensorrt)")


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


# -- runner ------------------------------------------------------------------------------------


class TensorrtRunner(Runner):
    """A serialized engine on TensorRT through Polygraphy's ``TrtRunner``. Feeds are float32 NCHW;
    a batch larger than the engine profile's maximum runs in chunks."""

    runtime = "tensorrt"

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


def engine_record(path: Path, reference: Any, tol: Any, bench: Any,
                  max_drop: float | None) -> dict[str, Any]:  # pragma: no cover - needs a GPU
    """Parity and accuracy against the PyTorch reference, latency with CUDA events."""
    from pipeline.parity import run_outputs
    from pipeline.verify import evaluate, gate_accuracy, judge_parity

    runner = TensorrtRunner(path)
    with runner:
        outputs = run_outputs(runner, reference.inputs)
        parity = judge_parity(reference, outputs, tol)
        accuracy = evaluate(runner, reference)
        single = reference.inputs.sample(0)
        latency = cuda_event_latency(runner, single, bench.warmup, bench.runs)
        batch = min(bench.batch, runner.max_batch)
        if batch > 1:
            latency["throughput"] = cuda_event_latency(
                runner, np.repeat(single, batch, axis=0), bench.warmup, bench.runs)
    record = {"parity": gate_accuracy(parity, accuracy, max_drop), "latency": latency}
    if accuracy is not None:
        record["accuracy"] = accuracy
    return record


# -- plan: what can be checked without a GPU ---------------------------------------------------


def source_output(precision: str) -> str:
    """The artifact an engine of ``precision`` is built from."""
    return "onnx_int8_trt" if precision == "int8" else "onnx"


def engine_plan(ctx: Any, precision: str, onnx_path: Path,
                trt_version: tuple[int, ...] | None) -> dict[str, Any]:
    """The check of the ONNX for TensorRT and the builder settings of one engine."""
    import onnx

    from targets.tensorrt.build import build_settings
    from targets.tensorrt.check import check_onnx_for_tensorrt

    model = onnx.load(str(onnx_path))
    check = check_onnx_for_tensorrt(model, int8=precision == "int8",
                                    trt_version=trt_version[:2] if trt_version else None)
    section = ctx.config.tensorrt
    batch = ctx.config.bench.batch
    resolution = ctx.config.resolution
    settings = build_settings(
        precision, check.facts["inputs"][0]["name"], (3, resolution, resolution),
        min_batch=section.min_batch, opt_batch=section.opt_batch or batch,
        max_batch=section.max_batch or max(batch, section.opt_batch or 1),
        workspace_mib=section.workspace_mib, optimization_level=section.optimization_level)
    return {"check": check.to_json(), "settings": settings}


def _plan_parity(problems: list[str], checked: int) -> dict[str, Any]:
    return {"verdict": "pass" if not problems else "fail",
            "reason": f"{checked} ONNX graph(s) checked for TensorRT (opset, ops, input shapes, "
                      "Q/DQ form and placement); structural checks only, no numbers compared"
            if not problems else "; ".join(problems),
            "failures": problems, "max_abs": None, "max_rel": None, "cosine": None,
            "top1_agreement": None, "n_inputs": 0}


class TensorrtPlanStage(Stage):
    """``tensorrt:plan``: validate every ONNX handed to TensorRT, record the build settings."""

    stage = "plan_tensorrt"
    version = 1
    tools = ("onnx",)
    target = "tensorrt"
    precision = "plan"

    def __init__(self, ctx: Any, precisions: tuple[str, ...]) -> None:
        self.ctx = ctx
        self.engine_precisions = precisions
        self.inputs = tuple(dict.fromkeys(source_output(p) for p in precisions))
        self.trt_version = tensorrt_version()

    @property
    def name(self) -> str:
        return "tensorrt:plan"

    def config(self) -> dict[str, Any]:
        return {"precisions": list(self.engine_precisions),
                "tensorrt": self.ctx.config.tensorrt.model_dump(),
                "batch": self.ctx.config.bench.batch, "resolution": self.ctx.config.resolution,
                "tensorrt_version": list(self.trt_version) if self.trt_version else None}

    def run(self, inputs: dict, workdir: Path) -> StageOutput:
        plans = {p: engine_plan(self.ctx, p, inputs[source_output(p)].path, self.trt_version)
                 for p in self.engine_precisions}
        problems = [f"{p}: {problem}" for p, plan in plans.items()
                    for problem in plan["check"]["problems"]]
        record = {"parity": _plan_parity(problems, len(self.inputs)), "latency": None,
                  "info": {"engines": plans}}
        return StageOutput({}, record)


# -- engines (GPU machines only) ---------------------------------------------------------------


def timing_cache_path(cache_root: Path, gpu: str, compute_capability: str,
                      trt_version: tuple[int, ...]) -> Path:
    """Where the timing cache of one GPU model and TensorRT version persists between runs."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", gpu).strip("-").lower()
    version = ".".join(map(str, trt_version))
    return cache_root / "tensorrt" / f"timing-{slug}-sm{compute_capability}-trt{version}.cache"


class TensorrtEngineStage(Stage):  # pragma: no cover - run needs an NVIDIA GPU and TensorRT
    """``tensorrt:<precision>``: build one engine, then check and time it on TensorRT."""

    stage = "build_tensorrt"
    version = 1
    tools = ("onnx", "polygraphy")
    target = "tensorrt"

    def __init__(self, ctx: Any, precision: str) -> None:
        from targets.tensorrt.cuda import cuda_devices

        self.ctx = ctx
        self.precision = precision
        self.inputs = (source_output(precision), "reference")
        self.outputs = (f"tensorrt_{precision}",)
        self.trt_version = tensorrt_version()
        self.device = cuda_devices()[0]

    @property
    def name(self) -> str:
        return f"tensorrt:{self.precision}"

    def config(self) -> dict[str, Any]:
        return {"precision": self.precision, "tensorrt": self.ctx.config.tensorrt.model_dump(),
                "batch": self.ctx.config.bench.batch, "resolution": self.ctx.config.resolution,
                "tensorrt_version": list(self.trt_version or ()),
                "gpu": self.device.name, "compute_capability": self.device.compute_capability,
                **self.ctx.measure_config(self.precision)}

    def run(self, inputs: dict, workdir: Path) -> StageOutput:
        from pipeline.files import atomic_copy
        from pipeline.isolate import run_isolated
        from pipeline.reference import Reference

        c = self.ctx.config
        source = inputs[source_output(self.precision)].path
        plan = engine_plan(self.ctx, self.precision, source, self.trt_version)
        if plan["check"]["problems"]:
            raise StageError(self.name, "; ".join(plan["check"]["problems"]))
        engine = workdir / f"model_{self.precision}.engine"
        shared_cache = timing_cache_path(c.cache_dir, self.device.name,
                                         self.device.compute_capability, self.trt_version)
        new_cache = workdir / "timing.cache"
        info = run_isolated("targets.tensorrt.build:build",
                            {"onnx_path": str(source), "engine_path": str(engine),
                             "settings": plan["settings"],
                             "load_timing_cache": str(shared_cache),
                             "save_timing_cache": str(new_cache)},
                            stage=self.name, model=self.ctx.source.label,
                            timeout_s=c.convert_timeout_s)
        if new_cache.is_file():
            atomic_copy(new_cache, shared_cache)
        record = engine_record(engine, Reference.load(inputs["reference"].path),
                               self.ctx.tolerance(self.precision), c.bench,
                               self.ctx.accuracy_drop(self.precision))
        record["parity"]["runtime"] = f"TensorRT {info['tensorrt_version']} on {info['gpu']}"
        info.update(warning=ENGINE_WARNING, check=plan["check"])
        record["info"] = info
        return StageOutput({self.outputs[0]: OutputFile(engine, "engine",
                                                        {"precision": self.precision})}, record)


# -- target ------------------------------------------------------------------------------------


@register
class TensorrtTarget(Target):
    """TensorRT engines for NVIDIA GPUs, built from the trunk's ONNX (fp16, fp32) and from the
    Q/DQ ONNX for TensorRT (int8, explicit quantization)."""

    name = "tensorrt"
    platform = "tensorrt"
    precisions = ("fp32", "fp16", "int8")
    suffixes = (".engine",)

    def unavailable_reason(self) -> str | None:
        from targets.tensorrt.cuda import cuda_device_problem

        problems = [p for p in (cuda_device_problem(), tensorrt_problem()) if p]
        if importlib.util.find_spec("polygraphy") is None:
            problems.append("polygraphy is not installed (run `make setup`)")
        if not problems:
            return None
        return "; ".join(problems) + f". {HOW_TO_GET}"

    def checks(self, ctx: Any, precisions: tuple[str, ...]) -> list[Stage]:
        from targets.tensorrt.qdq import TensorrtQdqStage

        wanted = tuple(p for p in self.precisions if p in precisions)
        stages: list[Stage] = [TensorrtQdqStage(ctx)] if "int8" in wanted else []
        return stages + [TensorrtPlanStage(ctx, wanted)] if wanted else []

    def stages(self, ctx: Any, precisions: tuple[str, ...]) -> list[Stage]:
        return [TensorrtEngineStage(ctx, p) for p in self.precisions if p in precisions]

    def runner(self, path: Path, threads: int) -> Runner:
        return TensorrtRunner(path, threads)

    def publish_name(self, output: str, precision: str, suffix: str) -> str:
        if output == "onnx_int8_trt":
            return "model_int8_qdq.onnx"
        return f"model_{precision}{suffix}"

    def write_sidecar(self, folder: Path, nodes: list[dict]) -> None:
        """``model.json``: per published file its sha256, input, profile, and for engines the
        TensorRT version and GPU they are bound to; for the Q/DQ ONNX, how to build it."""
        import json

        from pipeline.files import atomic_write_bytes

        files = {}
        for node in nodes:
            info = node.get("info") or {}
            entry = {"precision": node["precision"], "sha256": node["artifact"]["sha256"],
                     "bytes": node["artifact"]["bytes"]}
            if "settings" in info:
                entry.update(tensorrt_version=info["tensorrt_version"], gpu=info["gpu"],
                             compute_capability=info["compute_capability"],
                             profile=info["settings"]["profile"], warning=ENGINE_WARNING)
            else:
                entry["build_hint"] = ("trtexec --onnx=model_int8_qdq.onnx --int8 --fp16 "
                                       "--saveEngine=model_int8.engine (explicit quantization: "
                                       "no calibration needed)")
            files[Path(node["artifact"]["path"]).name] = entry
        sidecar = {"format": "mobile-export tensorrt sidecar", "version": 1, "files": files}
        atomic_write_bytes(folder / SIDECAR, json.dumps(sidecar, indent=1).encode())

