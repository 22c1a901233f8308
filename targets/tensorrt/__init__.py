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

import importlib.util
from pathlib import Path
from typing import Any

from pipeline.graph import Stage
from targets.base import Runner, Target, register, registered_targets
from targets.tensorrt.runner import TensorrtRunner, tensorrt_problem
from targets.tensorrt.stage import ENGINE_WARNING, TensorrtEngineStage, TensorrtPlanStage

SIDECAR = "model.json"
HOW_TO_GET = ("TensorRT engines need an NVIDIA GPU with its driver and TensorRT >= 10 in this "
              "environment: `pip install tensorrt` (fetches NVIDIA's libraries from "
              "pypi.nvidia.com) or run in an NGC container (nvcr.io/nvidia/tensorrt)")




@register
class TensorrtTarget(Target):
    """TensorRT engines for NVIDIA GPUs, built from the trunk's ONNX (fp16, fp32) and from the
    Q/DQ ONNX for TensorRT (int8, explicit quantization)."""

    name = "tensorrt"
    platform = "tensorrt"
    precisions = ("fp32", "fp16", "int8")
    suffixes = (".engine",)
    sidecars = (SIDECAR,)

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

    def runtime_target_for(self, node: dict) -> Target:
        """``tensorrt:qdq``'s artifact is an ONNX file checked on ONNX Runtime: localised and
        named there, not as an engine."""
        from targets.tensorrt.qdq import TensorrtQdqStage

        if node.get("stage") == TensorrtQdqStage.stage:
            return registered_targets()["onnx"]()
        return self

    def intermediates_runner(self, path: Path, threads: int, info: dict,
                             source: Any) -> Runner:
        """An engine rebuilt from its source ONNX with every tensor marked (an engine itself
        keeps only its outputs), with the node's own builder settings."""
        from pipeline.errors import UserInputError
        from targets.tensorrt.intermediates import MarkedEngineRunner

        onnx_digest = (info.get("source_onnx") or {}).get("sha256")
        if not onnx_digest or "settings" not in info:
            raise UserInputError(f"{Path(path).name}: the node records no source ONNX and "
                                 "builder settings (an engine built before localisation); "
                                 "rerun the pipeline with --force tensorrt")
        return MarkedEngineRunner(source(onnx_digest), info["settings"], threads)

    def publish_name(self, output: str, precision: str, suffix: str) -> str:
        if output == "onnx_int8_trt":
            return "model_int8_qdq.onnx"
        return f"model_{precision}{suffix}"

    def checked_on(self, node: dict) -> tuple[str, bool]:
        """An engine is checked on TensorRT; the Q/DQ ONNX only on ONNX Runtime: a proxy."""
        runtime, _ = super().checked_on(node)
        return runtime, not runtime.startswith("TensorRT ")

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

