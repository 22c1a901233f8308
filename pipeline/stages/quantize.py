"""quantize: int8 ONNX with QDQ nodes, by ONNX Runtime's static quantization (pipeline.qdq).

One QuantConfig and one real-image calibration set (pipeline.calibration) serve every target;
this artifact is the ONNX Runtime int8 model. Weights: signed int8, per channel. Activations:
unsigned (QUInt8), which ONNX Runtime's x86 kernels run about twice as fast as signed
activations; TensorRT refuses that encoding, so its Q/DQ graph is a subclass with int8
activations (pipeline.stages.quantize_tensorrt). When the all-int8 model
fails its gates, the mixed-precision fallback (pipeline.sensitivity) keeps its most sensitive
layers in float until the gates pass, and the record says which layers and at what cost.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pipeline.artifact import Artifact
from pipeline.calibration import calibration_identity, calibration_set
from pipeline.context import RunContext
from pipeline.graph import OutputFile, Stage, StageOutput
from pipeline.qdq import Calibrated, calibrate, quantize_calibrated
from pipeline.reference import Reference
from pipeline.sensitivity import (conclude, layer_costs, onnx_candidates, rank_layers,
                                  search_float_layers)
from pipeline.verify import check_gates, check_node
from targets.onnxruntime import OrtRunner


class QuantizeOnnxStage(Stage):
    stage = "quantize"
    #: 3: a layer kept in float really computes in float on ONNX Runtime (pipeline.qdq)
    version = 3
    tools = ("onnx", "onnxruntime")
    inputs = ("onnx", "reference")
    outputs = ("onnx_int8",)
    target = "onnx"
    precision = "int8"
    #: activation encoding (pipeline.qdq.ACTIVATIONS) and the artifact's file name; the
    #: TensorRT Q/DQ stage (pipeline.stages.quantize_tensorrt) reuses this with int8 activations.
    activations = "uint8"
    filename = "model_int8.onnx"

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx

    @property
    def name(self) -> str:
        return "onnx:int8"

    def config(self) -> dict[str, Any]:
        return {"quant": self.ctx.config.quant.model_dump(), "activations": self.activations,
                "calibration": calibration_identity(self.ctx),
                **self.ctx.measure_config("int8")}

    def run(self, inputs: dict[str, Artifact], workdir: Path) -> StageOutput:
        c = self.ctx.config
        calib = calibration_set(self.ctx)
        calibrated = calibrate(inputs["onnx"].path, calib.batch, c.quant.method, workdir)
        path = workdir / self.filename
        info = quantize_calibrated(calibrated, path, c.quant.per_channel, self.activations)
        info["calibration_source"] = calib.source
        reference = Reference.load(inputs["reference"].path)
        record = self._check(path, reference)
        warnings = list(calib.warnings)
        if record["parity"]["verdict"] == "fail" and c.quant.fallback:
            record, info = self._fall_back(calibrated, path, reference, record, info, workdir,
                                           warnings)
        record["info"] = info
        if warnings:
            record["warnings"] = warnings
        return StageOutput({self.outputs[0]: OutputFile(path, "onnx", {"precision": "int8"})},
                           record)

    def _check(self, path: Path, reference: Reference) -> dict[str, Any]:
        c = self.ctx.config
        return check_node(OrtRunner(path, c.threads), reference, self.ctx.tolerance("int8"),
                          c.bench, self.ctx.accuracy_drop("int8"))

    def _fall_back(self, calibrated: Calibrated, path: Path, reference: Reference,
                   record: dict[str, Any], info: dict[str, Any], workdir: Path,
                   warnings: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Search for the fewest float layers that pass; publish that model in place of
        ``path`` when found. Returns the node's record and facts."""
        c = self.ctx.config

        def gate(candidate: Path) -> dict[str, Any]:
            return check_gates(OrtRunner(candidate, c.threads), reference,
                               self.ctx.tolerance("int8"), self.ctx.accuracy_drop("int8"))

        int8_bytes, start = path.stat().st_size, time.perf_counter()
        ranking = rank_layers(calibrated, path, reference, workdir / "mixed",
                              per_channel=c.quant.per_channel, activations=self.activations,
                              threads=c.threads)
        make = onnx_candidates(calibrated, workdir / "mixed", per_channel=c.quant.per_channel,
                               activations=self.activations)
        found = search_float_layers(ranking, make, gate,
                                    max_float_layers=c.quant.max_float_layers)
        record, summary, warning = conclude(
            found, record, path, lambda p: self._check(p, reference),
            layer_costs(calibrated.model), int8_bytes=int8_bytes, started=start,
            cap=c.quant.max_float_layers)
        warnings.append(warning)
        return record, {**info, **found.info, "mixed_precision": summary}
