"""Small edits of an ONNX graph in place: attributes, constants, static shapes (the rewrites'
shared tools, targets.tflite.rewrite and targets.tflite.rewrite_resize)."""
from __future__ import annotations

from typing import Any


def static_shapes(model: Any) -> dict[str, list[int]]:
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


def elem_types(model: Any) -> dict[str, int]:
    """The element type of every graph input and initializer (what a rewrite's input may be)."""
    types = {t.name: t.data_type for t in model.graph.initializer}
    types.update({v.name: v.type.tensor_type.elem_type for v in model.graph.input})
    return types


def attr(node: Any, name: str, default: Any = None) -> Any:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def set_attr(node: Any, name: str, value: Any) -> None:
    from onnx import helper

    drop_attr(node, name)
    node.attribute.append(helper.make_attribute(name, value))


def drop_attr(node: Any, name: str) -> None:
    kept = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend(kept)


def constant(model: Any, name: str) -> Any:
    """The value of initializer ``name`` as a numpy array, or None."""
    from onnx import numpy_helper

    for t in model.graph.initializer:
        if t.name == name:
            return numpy_helper.to_array(t)
    return None


def add_constant(model: Any, base: str, value: Any) -> str:
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
