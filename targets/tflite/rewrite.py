"""ONNX graph rewrites before onnx2tf, each for a gap of onnx2tf 1.29.24, each meaning-preserving."""
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
