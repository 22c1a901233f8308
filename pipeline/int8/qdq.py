"""ONNX Runtime static QDQ quantization, split into its two costs: calibrate once, quantize often.

:func:`calibrate` pre-processes the fp32 graph (shape inference, fusions) and measures every
activation's range on the calibration batch; :func:`quantize_calibrated` turns that into a QDQ
model, keeping any chosen nodes in float. The ranges do not depend on which nodes are excluded,
so the mixed-precision search (pipeline.int8.search) re-quantizes dozens of times for the price
of one calibration. :func:`quantize_onnx` is both steps at once. The steps are
``onnxruntime.quantization.quantize_static``'s own, called directly.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import onnx

from pipeline.onnx_graph import op_counts, strip_metadata

if TYPE_CHECKING:
    from pipeline.int8.probe import Probe
    from pipeline.int8.search import Make, Ranking
    from pipeline.reference import Reference

#: Activation encodings: ``uint8`` (asymmetric, ONNX Runtime's fast x86 path) or ``int8``
#: (symmetric, zero point 0: the only form TensorRT's explicit quantization accepts).
ACTIVATIONS = ("uint8", "int8")

#: Op types whose weights carry the model's multiply-adds: the layers a mixed-precision model
#: keeps in float.
WEIGHTED_OPS = ("Conv", "Gemm", "MatMul")


class _BatchReader:
    """onnxruntime's CalibrationDataReader protocol over an (N, 3, H, W) array, one image a call."""

    def __init__(self, input_name: str, batch: np.ndarray) -> None:
        self._items = iter([{input_name: batch[i:i + 1]} for i in range(len(batch))])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._items, None)


@dataclass
class Calibrated:
    """A pre-processed fp32 graph (shape-inferred, ready to quantize) and its activation ranges."""

    model: onnx.ModelProto
    ranges: Any          # onnxruntime.quantization.TensorsData
    method: str
    images: int
    workdir: Path

    def weighted_nodes(self) -> list[str]:
        """Names of the Conv/Gemm/MatMul nodes with a constant weight, in graph order."""
        return [node.name for node in weighted_nodes(self.model)]


def weighted_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The Conv/Gemm/MatMul nodes whose weight (second input) is an initializer."""
    constants = {init.name for init in model.graph.initializer}
    return [n for n in model.graph.node
            if n.op_type in WEIGHTED_OPS and len(n.input) > 1 and n.input[1] in constants]


def calibrate(src: Path, batch: np.ndarray, method: str, workdir: Path) -> Calibrated:
    """Pre-process ``src`` into ``workdir``/prepared.onnx and calibrate its activations once."""
    from onnxruntime.quantization import CalibrationMethod, create_calibrator
    from onnxruntime.quantization.quant_utils import load_model_with_shape_infer
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = workdir / "prepared.onnx"
    quant_pre_process(str(src), str(prepared), skip_symbolic_shape=False)
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    model = load_model_with_shape_infer(prepared)
    calibrator = create_calibrator(prepared, _op_types(),
                                   augmented_model_path=str(workdir / "augmented.onnx"),
                                   calibrate_method=methods[method],
                                   extra_options={"moving_average": False})
    calibrator.collect_data(_BatchReader(model.graph.input[0].name, batch))
    ranges = calibrator.compute_data()
    del calibrator
    return Calibrated(model, ranges, method, int(len(batch)), workdir)


def _op_types() -> list[str]:
    """Every op type ONNX Runtime can quantize (quantize_static's default)."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return sorted(set(QLinearOpsRegistry) | set(QDQRegistry))


def qdq_model(calibrated: Calibrated, per_channel: bool, activations: str = "uint8",
              exclude: Sequence[str] = (), only: Sequence[str] = ()) -> onnx.ModelProto:
    """The QDQ model of ``calibrated`` (metadata stripped, checked). The nodes in ``exclude``
    (names of the pre-processed graph) stay in float; a non-empty ``only`` quantizes just
    those nodes and keeps the rest in float."""
    if activations not in ACTIVATIONS:
        raise ValueError(f"activations must be one of {ACTIVATIONS}, got {activations!r}")
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer
    from onnxruntime.quantization.quant_utils import update_opset_version

    unknown = sorted((set(exclude) | set(only)) - {n.name for n in calibrated.model.graph.node})
    if unknown:
        raise ValueError(f"nodes named for mixed precision are not in the prepared graph: "
                         f"{unknown}")
    symmetric = activations == "int8"
    model = update_opset_version(copy.deepcopy(calibrated.model), QuantType.QInt8)
    quantizer = QDQQuantizer(model, per_channel, False, QuantType.QInt8,
                             QuantType.QInt8 if symmetric else QuantType.QUInt8,
                             copy.deepcopy(calibrated.ranges), list(only), list(exclude),
                             _op_types(), {"ActivationSymmetric": symmetric,
                                           "WeightSymmetric": True,
                                           # TensorRT's DequantizeLinear takes no int32: in
                                           # its (int8) encoding biases stay float
                                           "QuantizeBias": not symmetric,
                                           # a float layer reads the tensor in front of its
                                           # input's Q (keep_float_layers_float): that tensor
                                           # must still be the activation's output
                                           "QDQKeepRemovableActivations":
                                               bool(exclude or only)})
    quantizer.quantize_model()
    keep_float_layers_float(quantizer.model.model)
    quantizer.model.topological_sort()
    out = strip_metadata(quantizer.model.model)
    onnx.checker.check_model(out)
    return out


def keep_float_layers_float(model: onnx.ModelProto) -> list[str]:
    """Feed every weighted node whose weight stayed float the float tensor in front of its
    input's QuantizeLinear → DequantizeLinear pair; return those nodes' names.

    ONNX Runtime (≥ 1.20) runs a basic-level graph transformer, ``WeightBiasQuantization``, at
    session creation: a Conv/Gemm whose input comes from a per-tensor DequantizeLinear and whose
    weight is a float initializer gets that weight quantized to *per-tensor* int8 (and its bias
    to int32). A layer "kept in float" between quantized neighbours would silently run in int8,
    with a coarser scheme than the quantizer's. With its input taken before the Q → DQ pair the
    layer computes in float, as the mixed-precision record says; Q/DQ nodes left without a
    consumer are removed."""
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    constants = {init.name for init in graph.initializer}
    rewired = []
    for node in graph.node:
        if node.op_type not in WEIGHTED_OPS or len(node.input) < 2 \
                or node.input[1] not in constants:
            continue
        dq = producer.get(node.input[0])
        q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" \
            else None
        if q is not None and q.op_type == "QuantizeLinear":
            node.input[0] = q.input[0]
            rewired.append(node.name)
    _drop_unused_qdq(graph)
    return rewired


def _drop_unused_qdq(graph: onnx.GraphProto) -> None:
    """Remove Q/DQ nodes whose outputs nothing reads (repeated: a Q may feed only a dead DQ)."""
    while True:
        used = {name for node in graph.node for name in node.input}
        used |= {out.name for out in graph.output}
        dead = [node for node in graph.node
                if node.op_type in ("QuantizeLinear", "DequantizeLinear")
                and not any(out in used for out in node.output)]
        if not dead:
            return
        for node in dead:
            graph.node.remove(node)


def quantize_calibrated(calibrated: Calibrated, dst: Path, per_channel: bool,
                        activations: str = "uint8",
                        exclude: Sequence[str] = ()) -> dict[str, Any]:
    """Write the QDQ model of ``calibrated`` to ``dst``, the nodes in ``exclude`` in float;
    return the artifact's facts."""
    model = qdq_model(calibrated, per_channel, activations, exclude)
    dst.write_bytes(model.SerializeToString(deterministic=True))
    return {"ops": op_counts(model), "format": "QDQ",
            "weights": "int8 per-channel" if per_channel else "int8 per-tensor",
            "activations": "int8 symmetric" if activations == "int8" else activations,
            "float_nodes": sorted(exclude), "calibration_method": calibrated.method,
            "calibration_images": calibrated.images}


def quantize_onnx(src: Path, dst: Path, batch: np.ndarray, method: str, per_channel: bool,
                  workdir: Path, activations: str = "uint8",
                  exclude: Sequence[str] = ()) -> dict[str, Any]:
    """Pre-process (shape inference, fusions), calibrate, then static QDQ quantization.
    ``exclude`` names nodes of the pre-processed graph that stay in float (mixed precision)."""
    if activations not in ACTIVATIONS:
        raise ValueError(f"activations must be one of {ACTIVATIONS}, got {activations!r}")
    return quantize_calibrated(calibrate(src, batch, method, workdir), dst, per_channel,
                               activations, exclude)


# -- the mixed-precision search on QDQ graphs (pipeline.int8.search) ---------------------


def layer_sensitivity(calibrated: Calibrated, probe: Probe, per_channel: bool,
                      activations: str, workdir: Path, threads: int = 1) -> dict[str, float]:
    """Weighted node -> probe error with that node alone quantized, most sensitive first."""
    from pipeline.int8.search import rank_alone
    from targets.base import file_runner

    path = workdir / "one_layer.onnx"

    def alone(node: str) -> Path:
        model = qdq_model(calibrated, per_channel, activations, only=[node])
        path.write_bytes(model.SerializeToString())
        return path

    return rank_alone(calibrated.weighted_nodes(), alone, probe,
                      lambda model: file_runner(model, threads))


def layer_costs(model: onnx.ModelProto) -> dict[str, tuple[int, int]]:
    """Weighted node -> (weight parameters, multiply-adds per sample), from the shape-inferred
    graph: a Conv's MACs are its weight count times its output's spatial size."""
    weights = {init.name: math.prod(init.dims) for init in model.graph.initializer}
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(model.graph.value_info) + list(model.graph.output)}
    costs = {}
    for node in weighted_nodes(model):
        params = weights[node.input[1]]
        spatial = shapes.get(node.output[0], [])[2:] if node.op_type == "Conv" else []
        costs[node.name] = (params, params * math.prod(d for d in spatial if d > 0))
    return costs


def rank_layers(calibrated: Calibrated, int8_model: Path, reference: Reference, workdir: Path,
                *, per_channel: bool, activations: str = "uint8", threads: int = 1) -> Ranking:
    """Sensitivity of every weighted layer; ``int8_model`` is the all-int8 model of
    ``calibrated`` (its error is the yardstick the record shows next to each layer's)."""
    workdir.mkdir(parents=True, exist_ok=True)
    from pipeline.int8.probe import Probe
    from pipeline.int8.search import Ranking

    probe = Probe.of(reference)
    return Ranking(probe.error(int8_model, threads),
                   layer_sensitivity(calibrated, probe, per_channel, activations, workdir,
                                     threads))


def onnx_candidates(calibrated: Calibrated, workdir: Path, *, per_channel: bool,
                    activations: str = "uint8") -> Make:
    """Candidates re-quantized by ONNX Runtime from one calibration (``workdir``: one model per
    attempt)."""
    workdir.mkdir(parents=True, exist_ok=True)

    def make(float_layers: list[str]) -> tuple[Path, dict[str, Any]]:
        path = workdir / f"mixed_{len(float_layers)}.onnx"
        return path, quantize_calibrated(calibrated, path, per_channel, activations,
                                         float_layers)

    return make


