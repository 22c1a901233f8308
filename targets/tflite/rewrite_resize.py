"""Resize -> two matrix products, for the Resize forms TFLite's kernels cannot reproduce.

ONNX's Resize (every mode: nearest with any rounding, linear, cubic, antialiased; every
coordinate transformation but tf_crop_and_resize) interpolates each axis on its own, so on an
NCHW image it is ``Y = A_h · X · A_wᵀ`` with one fixed matrix per axis. TFLite has two resize
kernels (bilinear, nearest) with two coordinate flags, and onnx2tf 1.29.24 maps the other forms
onto them approximately (the ONNX node tests of Resize showed errors up to 5 on 0..16 data).
For those forms the product writes the two products instead: MatMul, Transpose, MatMul,
Transpose, which TFLite runs exactly up to float rounding. The matrices come from ONNX's own
reference implementation (``onnx.reference``), probed one axis at a time, and the rewrite is
kept only if the factorisation reproduces the reference on a random input. Only small images
are rewritten (the products cost in x out multiply-adds per row); the natively exact form, an
integer-factor upsample with the default half_pixel / round_prefer_floor rounding, keeps
TFLite's own kernel. Hand-written: no ONNX optimiser lowers Resize into matrix products.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from targets.tflite.onnx_edit import add_constant, constant

#: largest output plane (outH x outW) rewritten: the check runs ONNX's per-pixel reference
MAX_PLANE = 128 * 128


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    values = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return {k: v.decode() if isinstance(v, bytes) else v for k, v in values.items()}


def _natively_exact(attrs: dict[str, Any], scale: list[float]) -> bool:
    """The form TFLite's own kernels reproduce: an integer-factor upsample, linear or nearest,
    half_pixel coordinates, nearest's default rounding, no antialias."""
    return (attrs.get("mode", "nearest") in ("nearest", "linear")
            and attrs.get("coordinate_transformation_mode", "half_pixel") == "half_pixel"
            and attrs.get("nearest_mode", "round_prefer_floor") == "round_prefer_floor"
            and not attrs.get("antialias", 0)
            and all(s >= 1 and float(s).is_integer() for s in scale))


def _reference_resize(node: Any, x: np.ndarray, scales: np.ndarray | None,
                      sizes: np.ndarray | None) -> np.ndarray:
    """ONNX's reference Resize of ``x`` with the node's attributes."""
    from onnx import TensorProto, helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    inits, names = [], ["x", "", "", ""]
    for index, value in ((2, scales), (3, sizes)):
        if value is not None:
            names[index] = f"in{index}"
            inits.append(numpy_helper.from_array(value, names[index]))
    probe = helper.make_node("Resize", names[: 4 if sizes is not None else 3], ["y"])
    probe.attribute.extend(node.attribute)
    graph = helper.make_graph([probe], "probe",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    return ReferenceEvaluator(model).run(None, {"x": x.astype(np.float32)})[0]


def _axis_matrix(node: Any, axis: int, size: int, out: int, scales: np.ndarray | None
                 ) -> np.ndarray:
    """A (out, size) matrix: axis ``axis`` (2 or 3) of the node's Resize, the other axis held
    at one pixel; probed on ``size`` basis images in the channel axis."""
    shape = [1, size, 1, 1]
    shape[axis] = size
    basis = np.zeros(shape, np.float32)
    for c in range(size):
        index = [0, c, 0, 0]
        index[axis] = c
        basis[tuple(index)] = 1.0
    if scales is not None:
        probe_scales = np.ones(4, np.float32)
        probe_scales[axis] = scales[axis]
        y = _reference_resize(node, basis, probe_scales, None)
    else:
        probe_sizes = np.array([1, size, 1, 1], np.int64)
        probe_sizes[axis] = out
        y = _reference_resize(node, basis, None, probe_sizes)
    y = y[0, :, :, 0] if axis == 2 else y[0, :, 0, :]
    return y.T.astype(np.float32)          # (out, size): column c is basis image c resized


def resize_as_matmul(model: Any, node: Any, shapes: dict[str, list[int]],
                     dtypes: dict[str, int]) -> bool:
    """Replace a static 4-D float Resize TFLite cannot reproduce by Y = A_h · X · A_wᵀ."""
    from onnx import TensorProto, helper

    attrs = _attrs(node)
    if dtypes.get(node.input[0], TensorProto.FLOAT) != TensorProto.FLOAT:
        return False
    x, y = shapes.get(node.input[0]), shapes.get(node.output[0])
    if x is None or y is None or len(x) != 4 or len(y) != 4 or "axes" in attrs \
            or attrs.get("coordinate_transformation_mode") == "tf_crop_and_resize" \
            or x[:2] != y[:2] or y[2] * y[3] > MAX_PLANE:
        return False
    scales = constant(model, node.input[2]) if len(node.input) > 2 and node.input[2] else None
    sizes = constant(model, node.input[3]) if len(node.input) > 3 and node.input[3] else None
    if (scales is None or scales.size == 0) and sizes is None:
        return False
    scales = scales.astype(np.float32) if scales is not None and scales.size else None
    scale = list(scales[2:]) if scales is not None else [y[2] / x[2], y[3] / x[3]]
    if _natively_exact(attrs, scale) or (scales is not None and list(scales[:2]) != [1, 1]):
        return False
    try:
        a_h = _axis_matrix(node, 2, x[2], y[2], scales)
        a_w = _axis_matrix(node, 3, x[3], y[3], scales)
        sample = np.random.default_rng(0).standard_normal((1, 1, x[2], x[3])).astype(np.float32)
        want = _reference_resize(node, sample, scales, None if sizes is None else
                                 np.array([1, 1, y[2], y[3]], np.int64))
    except Exception:   # a form the reference cannot evaluate: leave the node to onnx2tf
        return False
    if a_h.shape != (y[2], x[2]) or a_w.shape != (y[3], x[3]) \
            or not np.allclose(a_h @ sample[0, 0] @ a_w.T, want[0, 0], rtol=1e-5, atol=1e-6):
        return False
    base = node.output[0]
    w_t = add_constant(model, f"{base}_resize_w", np.ascontiguousarray(a_w.T))
    h_t = add_constant(model, f"{base}_resize_h", np.ascontiguousarray(a_h.T))
    steps = [helper.make_node("MatMul", [node.input[0], w_t], [f"{base}_rw"]),
             helper.make_node("Transpose", [f"{base}_rw"], [f"{base}_rwt"], perm=[0, 1, 3, 2]),
             helper.make_node("MatMul", [f"{base}_rwt", h_t], [f"{base}_rhw"]),
             helper.make_node("Transpose", [f"{base}_rhw"], [base], perm=[0, 1, 3, 2])]
    index = list(model.graph.node).index(node)
    model.graph.node.remove(node)
    for offset, step in enumerate(steps):
        step.name = f"{node.name or base}_as_matmul_{offset}"
        model.graph.node.insert(index + offset, step)
    return True
