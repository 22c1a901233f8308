"""The ONNX checks for TensorRT that run without a GPU: each rule can pass and can fail."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from targets.tensorrt.check import SUPPORTED_OPS, check_onnx_for_tensorrt, max_opset


def _conv_model(*, opset: int = 18, input_shape=("batch", 3, 8, 8), extra_nodes=(),
                qdq: str | None = None, axis: int = 0, zero_point_type=TensorProto.INT8,
                zero_point=0, dq_on: tuple[bool, bool] = (True, True)) -> onnx.ModelProto:
    """A one-conv graph; ``qdq`` adds Q/DQ on the data input and DQ on the weight."""
    weight = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    inits = []
    nodes = []
    data, w = "x", "w"
    if qdq:
        inits += [numpy_helper.from_array(np.array(0.05, np.float32), "x_scale"),
                  helper.make_tensor("x_zp", zero_point_type, [], [zero_point]),
                  numpy_helper.from_array((weight * 20).round().astype(np.int8), "w_q"),
                  numpy_helper.from_array(np.full(4 if axis is not None else 1, 0.05,
                                                  np.float32), "w_scale"),
                  numpy_helper.from_array(np.zeros(4, np.int8), "w_zp")]
        if dq_on[0]:
            nodes += [helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zp"], ["x_q"],
                                       name="q_x"),
                      helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zp"], ["x_dq"],
                                       name="dq_x")]
            data = "x_dq"
        if dq_on[1]:
            nodes.append(helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"],
                                          ["w_dq"], name="dq_w", axis=axis))
            w = "w_dq"
        else:
            inits.append(numpy_helper.from_array(weight, "w"))
    else:
        inits.append(numpy_helper.from_array(weight, "w"))
    nodes.append(helper.make_node("Conv", [data, w], ["y"], name="conv", pads=[1, 1, 1, 1]))
    nodes.extend(extra_nodes)
    out = nodes[-1].output[0]
    graph = helper.make_graph(nodes, "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, input_shape)],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)],
                              initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_a_float_graph_passes_and_records_what_was_checked() -> None:
    check = check_onnx_for_tensorrt(_conv_model(), int8=False)
    assert check.ok, check.problems
    facts = check.to_json()
    assert facts["opset"] == 18 and facts["opset_range"] == [9, 20]
    assert facts["ops"] == {"Conv": 1}
    assert facts["inputs"] == [{"name": "x", "shape": ["batch", 3, 8, 8], "dtype": "float"}]


def test_a_well_formed_symmetric_qdq_graph_passes() -> None:
    check = check_onnx_for_tensorrt(_conv_model(qdq="int8"), int8=True)
    assert check.ok, check.problems
    assert check.facts["qdq"] == {"quantize": 1, "dequantize": 2, "quantized_layers": 1,
                                  "float_layers": []}


def test_opset_outside_the_parsers_range_is_refused() -> None:
    assert max_opset(None) == 20 and max_opset((10, 15)) == 24 and max_opset((10, 8)) == 20
    problems = check_onnx_for_tensorrt(_conv_model(opset=22), int8=False).problems
    assert any("opset 22" in p and "9-20" in p for p in problems)
    assert check_onnx_for_tensorrt(_conv_model(opset=22), int8=False,
                                   trt_version=(10, 15)).ok


def test_unsupported_and_custom_domain_ops_are_named() -> None:
    assert "Unique" not in SUPPORTED_OPS and "Conv" in SUPPORTED_OPS
    extra = [helper.make_node("Unique", ["y"], ["u"], name="unique"),
             helper.make_node("MyOp", ["u"], ["v"], name="mine", domain="com.example")]
    problems = check_onnx_for_tensorrt(_conv_model(extra_nodes=extra), int8=False).problems
    assert len(problems) == 1
    assert "Unique (x1)" in problems[0] and "com.example::MyOp (x1)" in problems[0]


def test_dynamic_dimensions_beyond_the_batch_are_refused() -> None:
    problems = check_onnx_for_tensorrt(_conv_model(input_shape=("batch", 3, "h", 8)),
                                       int8=False).problems
    assert any("dynamic dimension" in p and "'h'" in p for p in problems)


@pytest.mark.parametrize("kind,expected", [
    ({"zero_point_type": TensorProto.UINT8, "zero_point": 128}, "int8 with zero point 0"),
    ({"zero_point": 3}, "non-zero zero point"),
    ({"axis": 1}, "output-channel axis 0"),
    ({"dq_on": (True, False)}, "data input only"),
    ({"dq_on": (False, True)}, "weight input only"),
])
def test_malformed_quantization_is_refused(kind: dict, expected: str) -> None:
    problems = check_onnx_for_tensorrt(_conv_model(qdq="int8", **kind), int8=True).problems
    assert any(expected in p for p in problems), problems


def test_a_quantize_without_dequantize_is_refused() -> None:
    model = _conv_model(qdq="int8")
    dq_x = next(n for n in model.graph.node if n.name == "dq_x")
    model.graph.node.remove(dq_x)
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    conv.input[0] = "x_q"
    problems = check_onnx_for_tensorrt(model, int8=True).problems
    assert any("QuantizeLinear not followed by DequantizeLinear" in p for p in problems)


def test_int8_demands_explicit_quantization() -> None:
    problems = check_onnx_for_tensorrt(_conv_model(), int8=True).problems
    assert any("not explicitly quantized" in p for p in problems)


def test_onnx_runtimes_default_uint8_export_is_refused_and_the_int8_one_accepted(
        trained_tiny_export, tmp_path) -> None:
    """The real quantizer's two encodings, on the trained tiny model's ONNX."""
    from pipeline.int8.qdq import quantize_onnx

    batch = np.random.default_rng(0).standard_normal((4, 3, 64, 64)).astype(np.float32)
    verdicts = {}
    for activations in ("uint8", "int8"):
        out = tmp_path / f"{activations}.onnx"
        quantize_onnx(trained_tiny_export["onnx"], out, batch, "minmax", True, tmp_path,
                      activations=activations)
        verdicts[activations] = check_onnx_for_tensorrt(onnx.load(str(out)), int8=True)
    uint8 = " ".join(verdicts["uint8"].problems)
    assert "int8 with zero point 0" in uint8 and "int32 (bias)" in uint8
    assert verdicts["int8"].ok, verdicts["int8"].problems
    qdq = verdicts["int8"].facts["qdq"]
    assert qdq["quantized_layers"] == verdicts["int8"].facts["ops"]["Conv"] + 1  # + Gemm
    assert check_onnx_for_tensorrt(onnx.load(str(trained_tiny_export["onnx"])), int8=False).ok
