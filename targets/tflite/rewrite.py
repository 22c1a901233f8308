"""ONNX graph rewrites before onnx2tf, each for a gap of onnx2tf 1.29.24, each meaning-preserving
(tests/targets/tflite/test_rewrite.py runs the rewritten ONNX node tests on ONNX Runtime)."""
from __future__ import annotations

from typing import Any


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
    shapes = _static_shapes(model)
    changed: list[str] = []
    for node in list(model.graph.node):
        op, rewrite = node.op_type, _REWRITES.get(node.op_type)
        if rewrite is not None and rewrite(model, node, shapes):
            changed.append(f"{op}:{node.name or node.output[0]}")
    from targets.tflite.rewrite_resize import resize_as_matmul

    dtypes = _elem_types(model)
    for node in [n for n in model.graph.node if n.op_type == "Resize"]:
        if resize_as_matmul(model, node, shapes, dtypes):
            changed.append(f"Resize:{node.name or node.output[0]} as MatMul")
    return changed


def _static_shapes(model: Any) -> dict[str, list[int]]:
    """Every tensor's shape ONNX shape inference finds fully static (initializers included)."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:   # an op inference cannot type: no shapes, so no shape rewrite
        inferred = model
    shapes = {t.name: list(t.dims) for t in model.graph.initializer}
    graph = inferred.graph
    for value in list(graph.input) + list(graph.value_info) + list(graph.output):
        dims = value.type.tensor_type.shape.dim
        if value.type.HasField("tensor_type") and value.type.tensor_type.HasField("shape") \
                and all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = [d.dim_value for d in dims]
    return shapes


def _elem_types(model: Any) -> dict[str, int]:
    """The element type of every graph input and initializer (what a rewrite's input may be)."""
    types = {t.name: t.data_type for t in model.graph.initializer}
    types.update({v.name: v.type.tensor_type.elem_type for v in model.graph.input})
    return types


def _attr(node: Any, name: str, default: Any = None) -> Any:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _set_attr(node: Any, name: str, value: Any) -> None:
    from onnx import helper

    _drop_attr(node, name)
    node.attribute.append(helper.make_attribute(name, value))


def _drop_attr(node: Any, name: str) -> None:
    kept = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend(kept)


def _constant(model: Any, name: str) -> Any:
    """The value of initializer ``name`` as a numpy array, or None."""
    from onnx import numpy_helper

    for t in model.graph.initializer:
        if t.name == name:
            return numpy_helper.to_array(t)
    return None


def _add_constant(model: Any, base: str, value: Any) -> str:
    """A new initializer named after ``base`` holding ``value``; its name."""
    from onnx import numpy_helper

    taken = {t.name for t in model.graph.initializer} | {o for n in model.graph.node
                                                          for o in n.output}
    name, i = f"{base}_explicit", 0
    while name in taken:
        i += 1
        name = f"{base}_explicit{i}"
    model.graph.initializer.append(numpy_helper.from_array(value, name))
    return name


def explicit_same_padding(model: Any, node: Any, shapes: dict[str, list[int]]) -> bool:
    """Conv / pools with ``auto_pad`` SAME_UPPER or SAME_LOWER -> the ``pads`` ONNX derives:
    total = (ceil(in / s) - 1) * s + (k - 1) * d + 1 - in, the odd unit at the end (UPPER) or
    the start (LOWER). onnx2tf maps both to TensorFlow's SAME, which is UPPER only."""
    mode = _attr(node, "auto_pad", "NOTSET")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    x = shapes.get(node.input[0])
    if mode not in ("SAME_UPPER", "SAME_LOWER") or x is None:
        return False
    spatial = x[2:]
    kernel = _attr(node, "kernel_shape")
    if kernel is None and node.op_type == "Conv" and node.input[1] in shapes:
        kernel = shapes[node.input[1]][2:]
    if kernel is None or len(kernel) != len(spatial):
        return False
    strides = _attr(node, "strides") or [1] * len(spatial)
    dilations = _attr(node, "dilations") or [1] * len(spatial)
    _set_same_pads(node, mode, [max(0, (-(-size // s) - 1) * s + (k - 1) * d + 1 - size)
                                for size, k, s, d in zip(spatial, kernel, strides, dilations)])
    return True


def _set_same_pads(node: Any, mode: str, totals: list[int]) -> None:
    """``auto_pad`` dropped, ``pads`` set: each total split with the odd unit at the end
    (SAME_UPPER) or the start (SAME_LOWER)."""
    head = [t // 2 if mode == "SAME_UPPER" else t - t // 2 for t in totals]
    tail = [t - h for t, h in zip(totals, head)]
    _drop_attr(node, "auto_pad")
    _set_attr(node, "pads", head + tail)


def explicit_transpose_same_padding(model: Any, node: Any,
                                    shapes: dict[str, list[int]]) -> bool:
    """ConvTranspose with ``auto_pad`` SAME_*: output = in * s, so the ``pads`` are
    total = s * (in - 1) + output_padding + (k - 1) * d + 1 - in * s, split as ONNX's
    reference splits it (UPPER: the odd unit at the end)."""
    mode = _attr(node, "auto_pad", "NOTSET")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    x, w = shapes.get(node.input[0]), shapes.get(node.input[1])
    if mode not in ("SAME_UPPER", "SAME_LOWER") or x is None or w is None \
            or _attr(node, "output_shape") is not None:
        return False
    spatial, kernel = x[2:], _attr(node, "kernel_shape") or w[2:]
    strides = _attr(node, "strides") or [1] * len(spatial)
    dilations = _attr(node, "dilations") or [1] * len(spatial)
    extra = _attr(node, "output_padding") or [0] * len(spatial)
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
    axes, pads, x = _constant(model, node.input[3]), _constant(model, node.input[1]), \
        shapes.get(node.input[0])
    if axes is None or pads is None or x is None:
        return False
    rank = len(x)
    full = np.zeros(2 * rank, dtype=np.int64)
    for j, axis in enumerate(int(a) % rank for a in axes.reshape(-1)):
        full[axis], full[rank + axis] = pads[j], pads[len(axes) + j]
    node.input[1] = _add_constant(model, node.input[1], full)
    del node.input[3:]
    return True


def plain_clip(model: Any, node: Any, shapes: dict[str, list[int]]) -> bool:
    """Clip with neither bound -> Identity (onnx2tf 1.29.24 reads absent bounds as 0); Clip
    whose constant min exceeds its max -> Min(Max(x, min), max), which is ONNX's meaning (every
    value becomes max) where TensorFlow's clip_by_value is undefined."""
    bounds = [name for name in node.input[1:3]]
    bounds += [""] * (2 - len(bounds))
    if node.op_type != "Clip" or _attr(node, "min") is not None \
            or _attr(node, "max") is not None:
        return False
    if not any(bounds):
        node.op_type = "Identity"
        del node.input[1:]
        return True
    low, high = (_constant(model, b) if b else None for b in bounds)
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
    bias, out = _constant(model, node.input[2]), shapes.get(node.output[0])
    if bias is None or bias.size != 1 or bias.ndim == 0 or out is None or len(out) != 2:
        return False
    full = np.broadcast_to(bias.reshape(-1), (out[1],)).astype(bias.dtype)
    node.input[2] = _add_constant(model, node.input[2], np.ascontiguousarray(full))
    return True


def full_resize_without_axes(model: Any, node: Any, shapes: dict[str, list[int]]) -> bool:
    """Resize with ``axes`` or a ``keep_aspect_ratio_policy`` other than stretch -> scales or
    sizes over every axis, as ONNX's reference resolves them (the policy's one scale
    min / max over the axes, sizes int(scale * in + 0.5)); onnx2tf 1.29.24 crashes on both.
    Exact where the rounded size equals scale * in, as in every such node test."""
    import numpy as np

    axes_attr = _attr(node, "axes")
    policy = _attr(node, "keep_aspect_ratio_policy", b"stretch")
    policy = policy.decode() if isinstance(policy, bytes) else policy
    x = shapes.get(node.input[0])
    if (axes_attr is None and policy == "stretch") or x is None:
        return False
    rank = len(x)
    axes = [int(a) % rank for a in (axes_attr if axes_attr is not None else range(rank))]
    scales = _constant(model, node.input[2]) if len(node.input) > 2 and node.input[2] else None
    sizes = _constant(model, node.input[3]) if len(node.input) > 3 and node.input[3] else None
    if sizes is not None:
        full = np.array(x, dtype=np.int64)
        for j, axis in enumerate(axes):
            full[axis] = int(sizes.reshape(-1)[j])
        if policy in ("not_larger", "not_smaller"):
            ratios = [full[a] / x[a] for a in axes]
            scale = min(ratios) if policy == "not_larger" else max(ratios)
            for axis in axes:
                full[axis] = int(scale * x[axis] + 0.5)
        node.input[3] = _add_constant(model, node.input[3], full)
    elif scales is not None:
        full_scales = np.ones(rank, dtype=scales.dtype)
        for j, axis in enumerate(axes):
            full_scales[axis] = scales.reshape(-1)[j]
        node.input[2] = _add_constant(model, node.input[2], full_scales)
    else:
        return False
    _drop_attr(node, "axes")
    _drop_attr(node, "keep_aspect_ratio_policy")
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
