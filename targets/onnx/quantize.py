"""``onnx:int8``: the ONNX Runtime int8 model (pipeline.int8.stage with uint8 activations).

Weights: signed int8, per channel. Activations: unsigned (QUInt8), which ONNX Runtime's x86
kernels run about twice as fast as signed activations.
"""
from __future__ import annotations

from pipeline.int8.stage import QdqQuantizeStage


class QuantizeOnnxStage(QdqQuantizeStage):
    stage = "quantize"
    #: 3: a layer kept in float really computes in float on ONNX Runtime (pipeline.int8.qdq)
    version = 3
    tools = ("onnx", "onnxruntime")
    outputs = ("onnx_int8",)
    target = "onnx"
    activations = "uint8"
    filename = "model_int8.onnx"

    @property
    def name(self) -> str:
        return "onnx:int8"
