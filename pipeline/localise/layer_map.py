"""The run's layer map: each ONNX tensor that is a layer's output, with the torch module and
FX node it came from, built from the exporter's own name scopes (the join key is the ONNX
output tensor name; the label shown to users is the torch module path).

The dynamo exporter writes ``pkg.torch.onnx.name_scopes`` on every node it emits: the module
path from the root down to the FX node's name (``['', 'features', 'features.0', 'features.0.0',
'conv2d']``). Simplification and metadata stripping keep tensor names but drop that metadata, so
the scopes are read from the exported model and joined by output tensor name to the final one.
"""
from __future__ import annotations

import ast
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:       # protos only: the run's layer map and a localisation never import onnx
    import onnx

SCOPES_KEY = "pkg.torch.onnx.name_scopes"
SCHEMA = 1
#: a layer map is small (one short record per ONNX node); a bigger file is not one we wrote
MAX_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class Layer:
    """One comparable layer: an ONNX tensor that holds exactly one FX node's value."""

    tensor: str          # ONNX output tensor name (the join key)
    onnx_node: str
    op_type: str
    module: str          # torch module path that owns the FX node ('' for the model's forward)
    fx_node: str         # FX node of the exporter's program whose value this tensor is
    inputs: list[str]    # the nearest layer tensors (or graph inputs) this one is computed from


@dataclass
class LayerMap:
    graph_inputs: list[str]
    layers: list[Layer]
    #: ONNX tensors with no torch counterpart of their own, and why
    unjoined: list[dict[str, str]] = field(default_factory=list)

    def by_tensor(self) -> dict[str, Layer]:
        return {layer.tensor: layer for layer in self.layers}

    def by_fx_node(self) -> dict[str, Layer]:
        return {layer.fx_node: layer for layer in self.layers}

    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "graph_inputs": self.graph_inputs,
                "layers": [asdict(layer) for layer in self.layers], "unjoined": self.unjoined}

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=1, sort_keys=True) + "\n")

    @classmethod
    def from_json(cls, data: Any) -> "LayerMap":
        """Parse a layer map, checking its shape (it is read back from a cache or a run)."""
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise ValueError(f"not a layer map of schema {SCHEMA}")
        try:
            layers = [Layer(tensor=str(d["tensor"]), onnx_node=str(d["onnx_node"]),
                            op_type=str(d["op_type"]), module=str(d["module"]),
                            fx_node=str(d["fx_node"]), inputs=[str(i) for i in d["inputs"]])
                      for d in data["layers"]]
            graph_inputs = [str(name) for name in data["graph_inputs"]]
            unjoined = [{str(k): str(v) for k, v in d.items()} for d in data["unjoined"]]
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"a layer map entry has the wrong shape ({exc})") from None
        return cls(graph_inputs, layers, unjoined)

    @classmethod
    def load(cls, path: Path) -> "LayerMap":
        if path.stat().st_size > MAX_BYTES:
            raise ValueError(f"{path.name} is over {MAX_BYTES >> 20} MiB; not a layer map")
        return cls.from_json(json.loads(path.read_text()))


def _scopes(node: onnx.NodeProto) -> list[str] | None:
    for prop in node.metadata_props:
        if prop.key == SCOPES_KEY:
            try:
                value = ast.literal_eval(prop.value)    # a Python list literal, nothing else
            except (ValueError, SyntaxError):
                return None
            if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
                return value
    return None


def scopes_by_tensor(exported: onnx.ModelProto) -> dict[str, tuple[str, str]]:
    """Output tensor -> (innermost module path, FX node name) of the exporter's nodes."""
    found: dict[str, tuple[str, str]] = {}
    for node in exported.graph.node:
        scopes = _scopes(node)
        if scopes is None:
            continue
        module = scopes[-2] if len(scopes) >= 2 else ""
        for name in node.output:
            if name:
                found[name] = (module, scopes[-1])
    return found


def build_layer_map(exported: onnx.ModelProto, final: onnx.ModelProto) -> LayerMap:
    """The layer map of ``final`` (simplified, stripped) from ``exported``'s name scopes.

    An FX node the exporter decomposed into several ONNX nodes is one layer: the last of
    them holds the FX node's value; the others are listed as unjoined."""
    scopes = scopes_by_tensor(exported)
    initializers = {init.name for init in final.graph.initializer}
    graph_inputs = [i.name for i in final.graph.input if i.name not in initializers]
    last_of_fx: dict[str, str] = {}
    for node in final.graph.node:                # graph order is topological (ONNX rule)
        for name in node.output:
            if name in scopes:
                last_of_fx[scopes[name][1]] = name
    layer_tensors = set(last_of_fx.values())
    unjoined: list[dict[str, str]] = []
    layers: list[Layer] = []
    nearest: dict[str, list[str]] = {name: [name] for name in graph_inputs}
    for node in final.graph.node:
        ins: list[str] = []
        for name in node.input:
            for source in nearest.get(name, []):
                if source not in ins:
                    ins.append(source)
        for name in node.output:
            if name in layer_tensors:
                module, fx_node = scopes[name]
                layers.append(Layer(name, node.name, node.op_type, module, fx_node, ins))
                nearest[name] = [name]
                continue
            nearest[name] = ins
            if node.op_type == "Constant" or not any(i in nearest for i in node.input):
                continue                         # a constant, not an activation
            reason = (f"one of the ONNX nodes FX node '{scopes[name][1]}' became; its last "
                      "one carries the value torch computes" if name in scopes else
                      "not in the exporter's name scopes (made by the simplifier)")
            unjoined.append({"tensor": name, "onnx_node": node.name, "op_type": node.op_type,
                             "reason": reason})
    return LayerMap(graph_inputs, layers, unjoined)
