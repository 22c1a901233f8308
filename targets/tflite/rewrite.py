"""ONNX graph rewrites before onnx2tf, each for a gap of onnx2tf 1.29.24, each meaning-preserving
(tests/targets/tflite/test_rewrite.py runs the rewritten ONNX node tests on ONNX Runtime)."""
from __future__ import annotations

from typing import Any

from targets.tflite.onnx_edit import (add_constant, attr, constant, drop_attr, elem_types,
                                      set_attr, static_shapes)
from targets.tflite.rewrite_resize import resize_as_matmul


def spell_out_kernel_shapes(model: Any) -> None:
    """Give every Conv / ConvTranspose its ``kernel_shape`` from its weight's dims.

    ONNX lets the attribute be omitted (it is the weight's spatial dims); onnx2tf 1.29.24 reads
    it to choose the weight transposition and fails ("axes don't match array") without it.
    The value is the one ONNX infers, so the graph means the same."""
    from onnx import helper

    weights = {t.name: list(t.dims) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type not in ("Conv", "ConvTranspose") or len(node.input) < 2:
            continue
        if any(a.name == "kernel_shape" for a in node.attribute):
            continue
        dims = weights.get(node.input[1])
        if dims and len(dims) >= 3:
            node.attribute.append(helper.make_attribute("kernel_shape", dims[2:]))


# -- the conformance rewrites: each spells out in plain ONNX what an attribute or an optional
# input says, where onnx2tf 1.29.24 mis-converts or crashes on the short form. Each needs only
# static shapes (batch_one_copy fixes the batch) and constant inputs; otherwise the node is left
# as it is. Hand-written: onnxsim / onnxoptimizer have no pass that drops these forms.

_POOLS = ("AveragePool", "MaxPool", "LpPool")


def apply_rewrites(model: Any) -> list[str]:
    """Every rewrite of this module, in order; the names of the nodes changed (for the log)."""
    spell_out_kernel_shapes(model)
    shapes = static_shapes(model)
    changed: list[str] = []
    for node in list(model.graph.node):
        op, rewrite = node.op_type, _REWRITES.get(node.op_type)
        if rewrite is not None and rewrite(model, node, shapes):
            changed.append(f"{op}:{node.name or node.output[0]}")
    dtypes = elem_types(model)
    for node in [n for n in model.graph.node if n.op_type == "Resize"]:
        if resize_as_matmul(model, node, shapes, dtypes):
            changed.append(f"Resize:{node.name or node.output[0]} as MatMul")
    return changed


def explicit_same_padding(model: Any, node: Any, shapes: dict[str, list[int]]) -> bool:
    """Conv / pools with ``auto_pad`` SAME_UPPER or SAME_LOWER -> the ``pads`` ONNX derives:
    total = (ceil(in / s) - 1) * s + (k - 1) * d + 1 - in, the odd unit at the end (UPPER) or
    the start (LOWER). onnx2tf maps both to TensorFlow's SAME, which is UPPER only."""
    mode = attr(node, "auto_pad", "NOTSET")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    x = shapes.get(node.input[0])
    if mode not in ("SAME_UPPER", "SAME_LOWER") or x is None:
        return False
    spatial = x[2:]
    kernel = attr(node, "kernel_shape")
    if kernel is None and node.op_type == "Conv" and node.input[1] in shapes:
        kernel = shapes[node.input[1]][2:]
    if kernel is None or len(kernel) != len(spatial):
        return False
    strides = attr(node, "strides") or [1] * len(spatial)
    dilations = attr(node, "dilations") or [1] * len(spatial)
    _set_same_pads(node, mode, [max(0, (-(-size // s) - 1) * s + (k - 1) * d + 1 - size)
                                for size, k, s, d in zip(spatial, kernel, strides, dilations)])
    return True


def _set_same_pads(node: Any, mode: str, totals: list[int]) -> None:
    """``auto_pad`` dropped, ``pads`` set: each total split with the odd unit at the end
    (SAME_UPPER) or the start (SAME_LOWER)."""
    head = [t // 2 if mode == "SAME_UPPER" else t - t // 2 for t in totals]
    tail = [t - h for t, h in zip(totals, head)]
    drop_attr(node, "auto_pad")
    set_attr(node, "pads", head + tail)


def explicit_transpose_same_padding(model: Any, node: Any,
                                    shapes: dict[str, list[int]]) -> bool:
    """ConvTranspose with ``auto_pad`` SAME_*: output = in * s, so the ``pads`` are
    total = s * (in - 1) + output_padding + (k - 1) * d + 1 - in * s, split as ONNX's
    reference splits it (UPPER: the odd unit at the end)."""
    mode = attr(node, "auto_pad", "NOTSET")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    x, w = shapes.get(node.input[0]), shapes.get(node.input[1])
    if mode not in ("SAME_UPPER", "SAME_LOWER") or x is None or w is None \
            or attr(node, "output_shape") is not None:
        return False
    spatial, kernel = x[2:], attr(node, "kernel_shape") or w[2:]
    strides = attr(node, "strides") or [1] * len(spatial)
    dilations = attr(node, "dilations") or [1] * len(spatial)
    extra = attr(node, "output_padding") or [0] * len(spatial)
    totals = [s * (size - 1) + p + (k - 1) * d + 1 - size * s
              for size, k, s, d, p in zip(spatial, kernel, strides, dilations, extra)]
    if any(total < 0 for total in totals):
        return False
    _set_same_pads(node, mode, totals)
    return True


def full_pad_without_axes(model: Any, node: Any, shapes: dict[str, list[int]]) -> bool:
    """Pad with an ``axes`` input (opset 18) -> ``pads`` over every axis (0 elsewhere), no
    ``axes``: onnx2tf 1.29.24 reads ``pads`` as covering every axis."""
    import numpy as np

    if len(node.input) < 4 or not node.input[3]:
        return False
    axes, pads, x = constant(model, node.input[3]), constant(model, node.input[1]), \
        shapes.get(node.input[0])
    if axes is None or pads is None or x is None:
        return False
    rank = len(x)
    full = np.zeros(2 * rank, dtype=np.int64)
    for j, axis in enumerate(int(a) % rank for a in axes.reshape(-1)):
        full[axis], full[rank + axis] = pads[j], pads[len(axes) + j]
    node.input[1] = add_constant(model, node.input[1], full)
    del node.input[3:]
    return True


def plain_clip(model: Any, node: Any, shapes: dict[str, list[int]]) -> bool:
    """Clip with neither bound -> Identity (onnx2tf 1.29.24 reads absent bounds as 0); Clip
    whose constant min exceeds its max -> Min(Max(x, min), max), which is ONNX's meaning (every
    value becomes max) where TensorFlow's clip_by_value is undefined."""
    bounds = [name for name in node.input[1:3]]
    bounds += [""] * (2 - len(bounds))
    if node.op_type != "Clip" or attr(node, "min") is not None \
            or attr(node, "max") is not None:
        return False
    if not any(bounds):
        node.op_type = "Identity"
        del node.input[1:]
        return True
    low, high = (constant(model, b) if b else None for b in bounds)
    if low is None or high is None or not (low > high).any():
        return False
    from onnx import helper

    middle = f"{node.output[0]}_max_with_min"
    index = list(model.graph.node).index(node)
    model.graph.node.insert(index, helper.make_node("Max", [node.input[0], bounds[0]],
                                                    [middle], name=f"{node.name}_max"))
    node.op_type = "Min"
    del node.input[:]
    node.input.extend([middle, bounds[1]])
    return True


def broadcast_gemm_bias(model: Any, node: Any, shapes: dict[str, list[int]]) -> bool:
    """Gemm whose bias C holds one element -> C broadcast to (N,): onnx2tf 1.29.24 adds a
    one-element C with the wrong rank."""
    import numpy as np

    if len(node.input) < 3 or not node.input[2]:
        return False
    bias, out = constant(model, node.input[2]), shapes.get(node.output[0])
    if bias is None or bias.size != 1 or bias.ndim == 0 or out is None or len(out) != 2:
        return False
    full = np.broadcast_to(bias.reshape(-1), (out[1],)).astype(bias.dtype)
    node.input[2] = add_constant(model, node.input[2], np.ascontiguousarray(full))
    return True


def full_resize_without_axes(model: Any, node: Any, shapes: dict[str, list[int]]) -> bool:
    """Resize with ``axes`` or a ``keep_aspect_ratio_policy`` other than stretch -> scales or
    sizes over every axis, as ONNX's reference resolves them (the policy's one scale
    min / max over the axes, sizes int(scale * in + 0.5)); onnx2tf 1.29.24 crashes on both.
    Exact where the rounded size equals scale * in, as in every such node test."""
    import numpy as np

    axes_attr = attr(node, "axes")
    policy = attr(node, "keep_aspect_ratio_policy", b"stretch")
    policy = policy.decode() if isinstance(policy, bytes) else policy
    x = shapes.get(node.input[0])
    if (axes_attr is None and policy == "stretch") or x is None:
        return False
    rank = len(x)
    axes = [int(a) % rank for a in (axes_attr if axes_attr is not None else range(rank))]
    scales = constant(model, node.input[2]) if len(node.input) > 2 and node.input[2] else None
    sizes = constant(model, node.input[3]) if len(node.input) > 3 and node.input[3] else None
    if sizes is not None:
        full = np.array(x, dtype=np.int64)
        for j, axis in enumerate(axes):
            full[axis] = int(sizes.reshape(-1)[j])
        if policy in ("not_larger", "not_smaller"):
            ratios = [full[a] / x[a] for a in axes]
            scale = min(ratios) if policy == "not_larger" else max(ratios)
            for axis in axes:
                full[axis] = int(scale * x[axis] + 0.5)
        node.input[3] = add_constant(model, node.input[3], full)
    elif scales is not None:
        full_scales = np.ones(rank, dtype=scales.dtype)
        for j, axis in enumerate(axes):
            full_scales[axis] = scales.reshape(-1)[j]
        node.input[2] = add_constant(model, node.input[2], full_scales)
    else:
        return False
    drop_attr(node, "axes")
    drop_attr(node, "keep_aspect_ratio_policy")
    return True


_REWRITES = {
    "Conv": explicit_same_padding,
    **{op: explicit_same_padding for op in _POOLS},
    "ConvTranspose": explicit_transpose_same_padding,
    "Pad": full_pad_without_axes,
    "Clip": plain_clip,
    "Gemm": broadcast_gemm_bias,
    "Resize": full_resize_without_axes,
}
