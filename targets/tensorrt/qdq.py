"""tensorrt:qdq: the int8 Q/DQ ONNX for TensorRT's explicit quantization.

The QDQ int8 stage (pipeline.int8.stage) with the encoding TensorRT's parser accepts: int8
activations with zero point 0 and float biases (pipeline.int8.qdq), from the run's one
calibration (shared with ``onnx:int8``) and with the same mixed-precision fallback. TensorRT
does not run here, so the graph is checked on ONNX Runtime CPU and labelled so; the engines are
built from it by targets.tensorrt.
"""
from __future__ import annotations

from pipeline.int8.stage import QdqQuantizeStage

QDQ_RUNTIME = ("ONNX Runtime CPU, on the Q/DQ graph TensorRT builds (not a TensorRT engine: "
               "engine parity needs a GPU)")


class TensorrtQdqStage(QdqQuantizeStage):
    """``tensorrt:qdq``: see the module doc."""

    stage = "quantize_tensorrt"
    #: 3: float layers of a mixed model read float inputs (pipeline.int8.qdq.keep_float_layers_float)
    version = 3
    tools = ("onnx", "onnxruntime")
    outputs = ("onnx_int8_trt",)
    target = "tensorrt"
    activations = "int8"
    filename = "model_int8_qdq.onnx"
    parity_runtime = QDQ_RUNTIME
    latency_note = ("ONNX Runtime CPU latency of the Q/DQ graph; says nothing about TensorRT "
                    "latency")

    @property
    def name(self) -> str:
        return "tensorrt:qdq"
