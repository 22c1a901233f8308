"""The graph rewrites before onnx2tf keep the graph's meaning: each rewritten ONNX node test,
run on ONNX Runtime, still gives the suite's expected outputs."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from pipeline.conformance.cases import node_cases
from pipeline.conformance.freeze import frozen_case
from targets.tflite.rewrite import apply_rewrites

# One node test per rewrite (and both SAME modes, both Resize forms).
REWRITTEN = {
    "test_averagepool_2d_same_lower": "AveragePool",
    "test_maxpool_2d_same_upper": "MaxPool",
    "test_conv_with_autopad_same": "Conv",
    "test_convtranspose_autopad_same": "ConvTranspose",
    "test_constant_pad_axes": "Pad",
    "test_constant_pad_negative_axes": "Pad",
    "test_clip_default_inbounds": "Clip",
    "test_clip_min_greater_than_max": "Clip",
    "test_gemm_default_single_elem_vector_bias": "Gemm",
    "test_resize_upsample_scales_nearest_axes_3_2": "Resize",
    "test_resize_upsample_sizes_nearest_axes_2_3": "Resize",
    "test_resize_upsample_sizes_nearest_not_larger": "Resize",
    "test_resize_downsample_sizes_nearest_not_smaller": "Resize",
}


@pytest.fixture(scope="module")
def cases():
    return {case.name: case for case in node_cases() if case.name in REWRITTEN}


@pytest.mark.parametrize("name", sorted(REWRITTEN))
def test_a_rewritten_node_test_still_gives_the_expected_outputs(name, cases, tmp_path):
    frozen = frozen_case(cases[name], tmp_path)
    model = onnx.load(frozen["model"])
    before = model.SerializeToString()
    changed = apply_rewrites(model)
    assert changed and changed[0].startswith(REWRITTEN[name]), changed
    assert model.SerializeToString() != before
    onnx.checker.check_model(model)
    feeds = {model.graph.input[0].name: np.load(frozen["inputs"][0])}
    # The pinned ONNX Runtime reads IR <= 11 and opset <= 23; these ops are unchanged in 24.
    model.ir_version = min(model.ir_version, 11)
    for opset in model.opset_import:
        opset.version = min(opset.version, 23) if opset.domain in ("", "ai.onnx") else opset.version
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, feeds)
    for array, path in zip(got, frozen["outputs"], strict=True):
        want = np.load(path)
        assert array.shape == want.shape
        np.testing.assert_allclose(array, want, rtol=frozen["rtol"], atol=frozen["atol"])


def test_the_short_forms_are_gone_after_the_rewrite(cases, tmp_path):
    forms = {}
    for name in ("test_averagepool_2d_same_lower", "test_constant_pad_axes",
                 "test_resize_upsample_sizes_nearest_not_larger"):
        model = onnx.load(frozen_case(cases[name], tmp_path / name)["model"])
        apply_rewrites(model)
        node = model.graph.node[-1]
        forms[name] = ({a.name for a in node.attribute}, len(node.input))
    assert "auto_pad" not in forms["test_averagepool_2d_same_lower"][0]
    assert forms["test_constant_pad_axes"][1] == 3
    assert not {"axes", "keep_aspect_ratio_policy"} & \
        forms["test_resize_upsample_sizes_nearest_not_larger"][0]


def test_a_node_without_static_shapes_or_constants_is_left_alone():
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n", 3, "h", "w"])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)
    pads = helper.make_tensor_value_info("pads", onnx.TensorProto.INT64, [4])
    nodes = [helper.make_node("MaxPool", ["x"], ["p"], kernel_shape=[3, 3], auto_pad="SAME_LOWER"),
             helper.make_node("Pad", ["p", "pads", "", "axes"], ["y"])]
    graph = helper.make_graph(nodes, "g", [x, pads], [y],
                              [numpy_helper.from_array(np.array([2, 3], np.int64), "axes")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    before = model.SerializeToString()
    assert apply_rewrites(model) == []
    assert model.SerializeToString() == before


RESIZED = ["test_resize_downsample_scales_linear", "test_resize_downsample_scales_nearest",
           "test_resize_upsample_scales_linear_align_corners",
           "test_resize_upsample_sizes_nearest_ceil_half_pixel",
           "test_resize_downsample_sizes_linear_pytorch_half_pixel",
           "test_resize_upsample_scales_cubic", "test_resize_downsample_scales_linear_antialias"]


@pytest.mark.parametrize("name", RESIZED)
def test_a_resize_tflite_cannot_reproduce_becomes_two_exact_matrix_products(name, tmp_path):
    case = next(c for c in node_cases() if c.name == name)
    frozen = frozen_case(case, tmp_path)
    model = onnx.load(frozen["model"])
    assert any(change.endswith("as MatMul") for change in apply_rewrites(model))
    assert [n.op_type for n in model.graph.node] == ["MatMul", "Transpose", "MatMul", "Transpose"]
    model.ir_version = min(model.ir_version, 11)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {model.graph.input[0].name: np.load(frozen["inputs"][0])})[0]
    np.testing.assert_allclose(got, np.load(frozen["outputs"][0]), rtol=1e-4, atol=1e-5)


def test_an_integer_upsample_keeps_tflites_own_kernel(tmp_path):
    case = next(c for c in node_cases() if c.name == "test_resize_upsample_scales_nearest")
    model = onnx.load(frozen_case(case, tmp_path)["model"])
    apply_rewrites(model)
    assert [n.op_type for n in model.graph.node] == ["Resize"]
