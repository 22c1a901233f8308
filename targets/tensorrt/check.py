"""Is an ONNX graph buildable by TensorRT 10? The checks that need no GPU, run before any build.

* opset inside the parser's range (TensorRT 10.0: 9-20; 10.15: 9-24);
* every op in the default ONNX domain and in the parser's support matrix;
* input shapes static except the batch dimension, which the optimisation profile covers;
* explicit quantization well formed for TensorRT: QuantizeLinear/DequantizeLinear with int8 data
  and a zero point of 0 (TensorRT supports symmetric quantization only; ONNX Runtime's default
  uint8 activations would be refused by the parser), positive constant scales, per-channel weight
  scales on the output-channel axis, each Q followed by DQ, and Q/DQ placed on both inputs (data
  and weight) of the conv / linear layers, so TensorRT can fuse them into int8 kernels.

The operator list and opset ranges come from onnx-tensorrt's ``docs/operators.md`` (TensorRT 10.x).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from targets.tensorrt.runner import MIN_TENSORRT

#: (major, minor) -> newest ONNX opset the TensorRT ONNX parser of that release accepts.
MAX_OPSET = {(10, 0): 20, (10, 15): 24}
MIN_OPSET = 9

#: Ops TensorRT 10's ONNX parser supports (default domain), from onnx-tensorrt docs/operators.md.
SUPPORTED_OPS = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh Attention AveragePool
BatchNormalization BlackmanWindow Cast CastLike Ceil Celu Clip Concat Constant ConstantOfShape
Conv ConvTranspose Cos Cosh CumSum DeformConv DepthToSpace DequantizeLinear Div Dropout Einsum Elu
Equal Erf Exp Expand EyeLike Flatten Floor Gather GatherElements GatherND Gelu Gemm
GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GridSample GroupNormalization
GRU HammingWindow HannWindow HardSigmoid HardSwish Hardmax Identity If ImageScaler
InstanceNormalization IsInf IsNaN LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax Loop
LRN LSTM LpNormalization LpPool MatMul Max MaxPool Mean MeanVarianceNormalization Min Mish Mod Mul
Neg NonMaxSuppression NonZero Not OneHot Or Pad ParametricSoftplus Pow PRelu QuantizeLinear
RandomNormal RandomNormalLike RandomUniform RandomUniformLike Range Reciprocal ReduceL1 ReduceL2
ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare
Relu Reshape Resize ReverseSequence RMSNormalization RNN RoiAlign RotaryEmbedding Round STFT
ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size
Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh TensorScatter
ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
""".split())

#: Layers TensorRT runs in int8 when Q/DQ sit on their inputs; the weight is input 1.
QUANTIZABLE = ("Conv", "ConvTranspose", "Gemm", "MatMul")
_INT8 = onnx.TensorProto.INT8


def max_opset(version: tuple[int, int] | None) -> int:
    """Newest opset for a TensorRT version; the oldest supported release when unknown."""
    known = sorted(MAX_OPSET)
    if version is None:
        return MAX_OPSET[known[0]]
    eligible = [v for v in known if v <= tuple(version[:2])]
    return MAX_OPSET[eligible[-1] if eligible else known[0]]


@dataclass
class TrtOnnxCheck:
    """Problems that would stop or silently degrade a TensorRT build, and what was looked at."""

    problems: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "problems": list(self.problems), **self.facts}


class _Graph:
    """Producers, consumers and constant values of one ONNX graph."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.constants: dict[str, np.ndarray] = {
            t.name: numpy_helper.to_array(t) for t in graph.initializer}
        self.dtypes: dict[str, int] = {t.name: t.data_type for t in graph.initializer}
        for node in graph.node:
            if node.op_type == "Constant" and node.attribute:
                value = onnx.helper.get_attribute_value(node.attribute[0])
                if isinstance(value, onnx.TensorProto):
                    self.constants[node.output[0]] = numpy_helper.to_array(value)
                    self.dtypes[node.output[0]] = value.data_type
        self.producer = {out: node for node in graph.node for out in node.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)

    def attr(self, node: onnx.NodeProto, name: str, default: Any) -> Any:
        for a in node.attribute:
            if a.name == name:
                return onnx.helper.get_attribute_value(a)
        return default


def _check_opset(model: onnx.ModelProto, trt_version: tuple[int, int] | None,
                 check: TrtOnnxCheck) -> None:
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    top = max_opset(trt_version)
    check.facts["opset"] = opset
    check.facts["opset_range"] = [MIN_OPSET, top]
    if opset is None or not MIN_OPSET <= opset <= top:
        check.problems.append(f"ONNX opset {opset} is outside TensorRT's range {MIN_OPSET}-{top}; "
                              f"export with opset <= {top} (config key `opset`)")


def _check_ops(model: onnx.ModelProto, check: TrtOnnxCheck) -> None:
    counts = Counter(n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}::{n.op_type}"
                     for n in model.graph.node)
    check.facts["ops"] = dict(sorted(counts.items()))
    unsupported = sorted(op for op in counts if op not in SUPPORTED_OPS)
    if unsupported:
        check.problems.append(
            "op(s) TensorRT's ONNX parser does not support: "
            + ", ".join(f"{op} (x{counts[op]})" for op in unsupported)
            + "; replace them in the model or provide a TensorRT plugin")


def _check_inputs(model: onnx.ModelProto, check: TrtOnnxCheck) -> None:
    initializers = {t.name for t in model.graph.initializer}
    inputs = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                for d in tensor.shape.dim]
        inputs.append({"name": value.name, "shape": dims,
                       "dtype": onnx.TensorProto.DataType.Name(tensor.elem_type).lower()})
        dynamic = [i for i, d in enumerate(dims) if not isinstance(d, int) or d <= 0]
        if [i for i in dynamic if i != 0]:
            check.problems.append(
                f"input '{value.name}' has dynamic dimension(s) {[dims[i] for i in dynamic]} "
                f"beyond the batch (shape {dims}); the optimisation profile only covers the "
                "batch, so export with a fixed resolution")
        if tensor.elem_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16):
            check.problems.append(f"input '{value.name}' is {inputs[-1]['dtype']}; the engine "
                                  "is fed float32 or float16 images")
    check.facts["inputs"] = inputs


#: Q/DQ faults found node by node, reported once per kind with the nodes it concerns.
_QDQ_FAULTS = {
    "scale": "non-constant, zero, negative or non-finite scale",
    "zp_dynamic": "non-constant zero point",
    "zp_dtype": "a quantized type other than int8 (ONNX Runtime's default is uint8 "
                "activations); TensorRT needs int8 with zero point 0: quantize with "
                "activations='int8' (the tensorrt:qdq artifact)",
    "zp_nonzero": "non-zero zero point; TensorRT supports symmetric quantization only",
    "bias_int32": "int32 (bias) input, which TensorRT's DequantizeLinear does not take; keep "
                  "biases in float (ONNX Runtime's QuantizeBias=False)",
    "zp_missing": "QuantizeLinear without a zero point, which means uint8 in ONNX; TensorRT "
                  "needs an explicit int8 zero point of 0",
    "q_unpaired": "QuantizeLinear not followed by DequantizeLinear",
    "dq_orphan": "DequantizeLinear reading neither a constant nor a QuantizeLinear",
}


def _zero_point_fault(graph: _Graph, node: onnx.NodeProto) -> str | None:
    if node.op_type == "DequantizeLinear" and graph.dtypes.get(node.input[0]) == \
            onnx.TensorProto.INT32:
        return "bias_int32"
    if len(node.input) <= 2 or not node.input[2]:
        return "zp_missing" if node.op_type == "QuantizeLinear" else None
    name = node.input[2]
    if name not in graph.constants:
        return "zp_dynamic"
    if graph.dtypes.get(name) != _INT8:
        return "zp_dtype"
    return "zp_nonzero" if np.any(graph.constants[name] != 0) else None


def _qdq_faults(graph: _Graph, quantize: list[onnx.NodeProto],
                dequantize: list[onnx.NodeProto]) -> list[str]:
    faults: dict[str, list[str]] = {}
    for node in quantize + dequantize:
        scale = graph.constants.get(node.input[1])
        if scale is None or not (np.all(np.isfinite(scale)) and np.all(scale > 0)):
            faults.setdefault("scale", []).append(node.name)
        if kind := _zero_point_fault(graph, node):
            faults.setdefault(kind, []).append(node.name)
    for node in quantize:
        readers = graph.consumers.get(node.output[0], [])
        if not readers or any(r.op_type != "DequantizeLinear" for r in readers):
            faults.setdefault("q_unpaired", []).append(node.name)
    for node in dequantize:
        producer = graph.producer.get(node.input[0])
        if node.input[0] not in graph.constants and (
                producer is None or producer.op_type != "QuantizeLinear"):
            faults.setdefault("dq_orphan", []).append(node.name)
    return [f"{len(names)} Q/DQ node(s) with {_QDQ_FAULTS[kind]} (e.g. "
            + ", ".join(f"'{n}'" for n in names[:3]) + ")" for kind, names in faults.items()]


def _check_qdq(model: onnx.ModelProto, graph: _Graph, int8: bool, check: TrtOnnxCheck) -> None:
    nodes = model.graph.node
    quantize = [n for n in nodes if n.op_type == "QuantizeLinear"]
    dequantize = [n for n in nodes if n.op_type == "DequantizeLinear"]
    problems = _qdq_faults(graph, quantize, dequantize)
    quantized, float_layers = [], []
    for node in nodes:
        if node.op_type not in QUANTIZABLE or len(node.input) < 2:
            continue
        feeds = [graph.producer.get(name) for name in node.input[:2]]
        is_dq = [p is not None and p.op_type == "DequantizeLinear" for p in feeds]
        if all(is_dq):
            quantized.append(node.name)
            weight_dq = feeds[1]
            scale = graph.constants.get(weight_dq.input[1])
            weight = graph.constants.get(weight_dq.input[0])
            if scale is not None and scale.size > 1 and weight is not None:
                axis = graph.attr(weight_dq, "axis", 1)
                want = 0 if node.op_type == "Conv" else (
                    1 if node.op_type == "ConvTranspose" else None)
                if want is not None and axis % weight.ndim != want:
                    problems.append(f"{node.op_type} '{node.name}': per-channel weight scales on "
                                    f"axis {axis}; TensorRT needs the output-channel axis {want}")
                if scale.size != weight.shape[axis % weight.ndim]:
                    problems.append(f"{node.op_type} '{node.name}': {scale.size} weight scales "
                                    f"for {weight.shape[axis % weight.ndim]} channels")
        elif any(is_dq):
            which = "data" if is_dq[0] else "weight"
            problems.append(f"{node.op_type} '{node.name}' has Q/DQ on its {which} input only; "
                            "TensorRT needs both (data and weight) to run it in int8")
        else:
            float_layers.append(node.name)
    if quantize or dequantize:
        check.facts["qdq"] = {"quantize": len(quantize), "dequantize": len(dequantize),
                              "quantized_layers": len(quantized), "float_layers": float_layers}
    if int8 and not quantized:
        problems.append("no conv/linear layer has Q/DQ on its inputs: this graph is not "
                        "explicitly quantized, TensorRT would build it in float")
    check.problems.extend(problems)


def check_onnx_for_tensorrt(model: onnx.ModelProto, *, int8: bool,
                            trt_version: tuple[int, int] | None = None) -> TrtOnnxCheck:
    """Every check of the module doc on ``model``; ``int8`` demands explicit quantization."""
    check = TrtOnnxCheck()
    check.facts["tensorrt_version_checked"] = (
        ".".join(map(str, trt_version[:2])) if trt_version else
        f">={'.'.join(map(str, MIN_TENSORRT))} (oldest supported release)")
    _check_opset(model, trt_version, check)
    _check_ops(model, check)
    _check_inputs(model, check)
    _check_qdq(model, _Graph(model.graph), int8, check)
    return check
