"""quantize: int8 ONNX with QDQ nodes, by ONNX Runtime's static quantization.

One QuantConfig and one real-image calibration set (pipeline.calibration) serve every target;
this artifact is both the ONNX Runtime int8 model and the input of TensorRT's explicit
quantization. Weights: signed int8, per channel. Activations: unsigned (QUInt8), which ONNX
Runtime's x86 kernels run about twice as fast as signed activations.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx

from pipeline.artifact import Artifact
from pipeline.calibration import calibration_identity, calibration_set
from pipeline.context import RunContext
from pipeline.graph import OutputFile, Stage, StageOutput
from pipeline.reference import Reference
from pipeline.stages.export_onnx import op_counts, strip_metadata
from pipeline.verify import check_node
from targets.onnxruntime import OrtRunner


class _BatchReader:
    """onnxruntime's CalibrationDataReader protocol over an (N, 3, H, W) array, one image a call."""

    def __init__(self, input_name: str, batch: np.ndarray) -> None:
        self._items = iter([{input_name: batch[i:i + 1]} for i in range(len(batch))])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._items, None)


def quantize_onnx(src: Path, dst: Path, batch: np.ndarray, method: str, per_channel: bool,
                  workdir: Path) -> dict[str, Any]:
    """Pre-process (shape inference, fusions), then static QDQ quantization."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, \
        quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = workdir / "prepared.onnx"
    quant_pre_process(str(src), str(prepared), skip_symbolic_shape=False)
    input_name = onnx.load(str(prepared), load_external_data=False).graph.input[0].name
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    raw = workdir / "quantized.onnx"
    quantize_static(str(prepared), str(raw), _BatchReader(input_name, batch),
                    quant_format=QuantFormat.QDQ, per_channel=per_channel,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=methods[method],
                    extra_options={"CalibMovingAverage": False})
    model = strip_metadata(onnx.load(str(raw)))
    onnx.checker.check_model(model)
    dst.write_bytes(model.SerializeToString(deterministic=True))
    return {"ops": op_counts(model), "format": "QDQ", "weights": "int8 per-channel"
            if per_channel else "int8 per-tensor", "activations": "uint8",
            "calibration_method": method, "calibration_images": int(len(batch))}


class QuantizeOnnxStage(Stage):
    stage = "quantize"
    version = 1
    tools = ("onnx", "onnxruntime")
    inputs = ("onnx", "reference")
    outputs = ("onnx_int8",)
    target = "onnx"
    precision = "int8"

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx

    @property
    def name(self) -> str:
        return "onnx:int8"

    def config(self) -> dict[str, Any]:
        return {"quant": self.ctx.config.quant.model_dump(),
                "calibration": calibration_identity(self.ctx),
                **self.ctx.measure_config("int8")}

    def run(self, inputs: dict[str, Artifact], workdir: Path) -> StageOutput:
        c = self.ctx.config
        calib = calibration_set(self.ctx)
        path = workdir / "model_int8.onnx"
        info = quantize_onnx(inputs["onnx"].path, path, calib.batch, c.quant.method,
                             c.quant.per_channel, workdir)
        info["calibration_source"] = calib.source
        record = check_node(OrtRunner(path, c.threads), Reference.load(inputs["reference"].path),
                            self.ctx.tolerance("int8"), c.bench, self.ctx.accuracy_drop("int8"))
        record["info"] = info
        if calib.warnings:
            record["warnings"] = calib.warnings
        return StageOutput({"onnx_int8": OutputFile(path, "onnx", {"precision": "int8"})},
                           record)
