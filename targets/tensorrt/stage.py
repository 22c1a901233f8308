"""The TensorRT nodes: ``tensorrt:plan`` (checks the ONNX graphs and the builder settings, runs
everywhere) and ``tensorrt:<precision>`` (builds and checks one engine, GPU machines only)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.errors import StageError
from pipeline.graph import OutputFile, Stage, StageOutput
from pipeline.parity import ParityResult
from targets.tensorrt.runner import TensorrtRunner, cuda_event_latency, tensorrt_version

if TYPE_CHECKING:
    from pipeline.verify import Checks

ENGINE_WARNING = ("a TensorRT engine runs only on the GPU model (compute capability) and the "
                  "TensorRT version it was built with; rebuild it from model_int8_qdq.onnx / the "
                  "fp32 ONNX on the deployment machine otherwise")


def engine_checks(path: Path, reference: Any, tol: Any, bench: Any,
                  max_drop: float | None) -> Checks:  # pragma: no cover - needs a GPU
    """Parity and accuracy against the PyTorch reference, latency with CUDA events."""
    from pipeline.parity import run_outputs
    from pipeline.verify import Checks, evaluate, gate_accuracy, judge_parity

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
    return Checks(gate_accuracy(parity, accuracy, max_drop), accuracy, latency)


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


def _plan_parity(problems: list[str], checked: int) -> ParityResult:
    if problems:
        return ParityResult("fail", "; ".join(problems), failures=list(problems))
    return ParityResult("pass", f"{checked} ONNX graph(s) checked for TensorRT (opset, ops, input "
                        "shapes, Q/DQ form and placement); structural checks only, no numbers "
                        "compared")


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
        record = {"parity": _plan_parity(problems, len(self.inputs)).to_json(), "latency": None,
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
    version = 2   # 2: the record names the source ONNX (localisation)
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
        from targets.tensorrt import build

        c = self.ctx.config
        source = inputs[source_output(self.precision)].path
        plan = engine_plan(self.ctx, self.precision, source, self.trt_version)
        if plan["check"]["problems"]:
            raise StageError(self.name, "; ".join(plan["check"]["problems"]))
        engine = workdir / f"model_{self.precision}.engine"
        shared_cache = timing_cache_path(c.cache_dir, self.device.name,
                                         self.device.compute_capability, self.trt_version)
        new_cache = workdir / "timing.cache"
        info = run_isolated(f"{build.__name__}:build",
                            {"onnx_path": str(source), "engine_path": str(engine),
                             "settings": plan["settings"],
                             "load_timing_cache": str(shared_cache),
                             "save_timing_cache": str(new_cache)},
                            stage=self.name, model=self.ctx.source.label,
                            timeout_s=c.convert_timeout_s)
        if new_cache.is_file():
            atomic_copy(new_cache, shared_cache)
        checks = engine_checks(engine, Reference.load(inputs["reference"].path),
                               self.ctx.tolerance(self.precision), c.bench,
                               self.ctx.accuracy_drop(self.precision))
        checks.parity.runtime = f"TensorRT {info['tensorrt_version']} on {info['gpu']}"
        info.update(warning=ENGINE_WARNING, check=plan["check"],
                    # localisation rebuilds an engine with every tensor marked from it
                    source_onnx={"sha256": inputs[source_output(self.precision)].digest})
        record = {**checks.to_record(), "info": info}
        return StageOutput({self.outputs[0]: OutputFile(engine, "engine",
                                                        {"precision": self.precision})}, record)
