"""Small facts and edits of ONNX graphs shared by the export and the quantizers: op counts,
path-free metadata (so two checkouts write the same bytes), a stable batch dimension name."""
from __future__ import annotations

from collections import Counter

import onnx


def _strip_graph(graph: onnx.GraphProto) -> None:
    graph.doc_string = ""
    del graph.metadata_props[:]
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        value.doc_string = ""
        del value.metadata_props[:]
    for init in graph.initializer:
        init.doc_string = ""
        del init.metadata_props[:]
    for node in graph.node:
        node.doc_string = ""
        del node.metadata_props[:]
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                _strip_graph(attr.g)
            for sub in attr.graphs:
                _strip_graph(sub)


def strip_metadata(model: onnx.ModelProto) -> onnx.ModelProto:
    """Remove every field that can hold a path, a stack trace or a timestamp."""
    model.doc_string = ""
    del model.metadata_props[:]
    model.producer_name = "mobile-export"
    model.producer_version = ""
    _strip_graph(model.graph)
    for function in model.functions:
        function.doc_string = ""
        del function.metadata_props[:]
        for node in function.node:
            node.doc_string = ""
            del node.metadata_props[:]
    return model


def name_batch_dim(model: onnx.ModelProto, name: str = "batch") -> None:
    """Give the exporter's generated symbol for the batch dimension (e.g. ``s31``) a stable name."""
    first = model.graph.input[0].type.tensor_type.shape.dim[0]
    if not first.HasField("dim_param"):
        return
    symbol = first.dim_param
    for value in list(model.graph.input) + list(model.graph.output) + list(model.graph.value_info):
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_param") and dim.dim_param == symbol:
                dim.dim_param = name


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    return dict(sorted(Counter(n.op_type for n in model.graph.node).items()))
