"""The run's layer map in every naming: ``layer_map.json`` in the report folder, one row per
layer with its torch module, FX node, ONNX node and tensor, and the tensor it became in each of
the run's artifacts (read from the artifact by its target, ``Target.tensor_names``; ``null``
where that artifact has no tensor of its own for it, e.g. a conv fused with its ReLU6).

Names are read once per artifact and remembered in the cache (pipeline.localise.memo), so a
cached rerun writes the same file without opening any artifact.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from pipeline.files import atomic_write_bytes
from pipeline.localise.layer_map import LayerMap
from pipeline.localise.auto import is_converted
from pipeline.localise.memo import memo_key, recall, remember

log = logging.getLogger(__name__)

RUN_MAP = "layer_map.json"


def _names_of(node: dict[str, Any], layers: LayerMap, cache_dir: Path,
              report: dict[str, Any]) -> tuple[dict[str, str] | None, str | None]:
    from targets.base import registered_targets

    target = registered_targets().get(node.get("target"))
    if target is None:
        return None, None
    runtime_target = target().runtime_target_for(node)
    key = memo_key(report, node, None, purpose="names")
    stored = recall(cache_dir, key, ("names",))
    if stored is not None and isinstance(stored["names"], dict):
        return {str(k): str(v) for k, v in stored["names"].items()}, None
    try:
        names = runtime_target.tensor_names(Path(node["artifact"]["path"]), layers,
                                      node.get("info") or {})
    except Exception as exc:  # noqa: BLE001 - a map entry missing is not a failed run
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        return None, f"{type(exc).__name__}: {first}"
    remember(cache_dir, key, {"names": names})
    return names, None


def run_layer_map(report: dict[str, Any]) -> dict[str, Any] | None:
    """The file's content for ``report``, or None when the run has no layer map (an ONNX
    input, a run from before localisation)."""
    from pipeline.localise.locate import layer_map_path

    try:
        layers = LayerMap.load(layer_map_path(report))
    except Exception as exc:  # noqa: BLE001 - no layer map: nothing to write
        log.debug("no layer map: %s", exc)
        return None
    cache_dir = Path(report["run"]["cache_dir"])
    export = next(n for n in report["nodes"] if n.get("name") == "export_onnx")
    layer_map_sha = export["info"]["layer_map"]["sha256"]
    columns: dict[str, dict[str, str]] = {}
    nodes = []
    for node in report["nodes"]:
        if node.get("status") not in ("ran", "cached") or not (node.get("artifact") or {}).get(
                "path") or not is_converted(node):
            continue
        names, problem = _names_of(node, layers, cache_dir, report)
        if names is None and problem is None:
            continue
        nodes.append({"name": node["name"], "target": node["target"],
                      "precision": node["precision"], "joined": len(names or {}),
                      **({"problem": problem} if problem else {})})
        columns[node["name"]] = names or {}
    return {"schema": 1, "layer_map_sha256": layer_map_sha, "nodes": nodes,
            "layers": [{"torch_module": layer.module, "fx_node": layer.fx_node,
                        "onnx_node": layer.onnx_node, "onnx_tensor": layer.tensor,
                        "op_type": layer.op_type,
                        "targets": {name: column.get(layer.tensor)
                                    for name, column in columns.items()}}
                       for layer in layers.layers],
            "unjoined": layers.unjoined}


def write_run_layer_map(report: dict[str, Any], out_dir: Path) -> None:
    """Write ``layer_map.json`` beside the report (when the run has a layer map)."""
    content = run_layer_map(report)
    if content is None:
        return
    data = (json.dumps(content, indent=1, sort_keys=True) + "\n").encode()
    path = Path(out_dir) / RUN_MAP
    if not path.is_file() or path.stat().st_size != len(data) or path.read_bytes() != data:
        atomic_write_bytes(path, data)
