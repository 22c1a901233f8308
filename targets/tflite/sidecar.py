"""``model.json``: what an Android app needs to feed each published .tflite, and the labels."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SIDECAR = "model.json"


def labels_for(ctx: Any) -> list[str] | None:
    """The class names the sidecar shows (pipeline.labels.known_labels)."""
    from pipeline.labels import known_labels

    return known_labels(ctx.config)


def sidecar_entry(node: dict[str, Any], file: Path) -> dict[str, Any]:
    from pipeline.artifact import sha256_file

    side = node["info"]["sidecar"]
    return {"file": file.name, "sha256": sha256_file(file), "bytes": file.stat().st_size,
            "input": side["inputs"][0] if len(side["inputs"]) == 1 else side["inputs"],
            "outputs": side["outputs"], "int8_io": node["info"].get("int8_io", False),
            "parity": {k: node["parity"].get(k) for k in ("verdict", "max_rel", "cosine",
                                                           "top1_agreement")}}


def build_sidecar(folder: Path, nodes: list[dict[str, Any]]) -> dict[str, Any]:
    """``model.json``: what an Android app needs to feed each published .tflite.

    Entries of earlier runs are kept while their file is still there with the same sha256."""
    folder = Path(folder)
    previous: dict[str, Any] = {}
    try:
        previous = json.loads((folder / SIDECAR).read_text()).get("models", {})
    except (OSError, ValueError, AttributeError):
        previous = {}
    models: dict[str, Any] = {}
    for precision, entry in previous.items():
        path = folder / str(entry.get("file", ""))
        try:
            from pipeline.artifact import sha256_file

            if path.is_file() and sha256_file(path) == entry.get("sha256"):
                models[precision] = entry
        except OSError:
            continue
    for node in nodes:
        path = Path(node["artifact"]["path"])
        models[node["precision"]] = sidecar_entry(node, path)
    first = nodes[0]["info"]["sidecar"]
    fp = next((n for n in nodes if n["precision"] == "fp32"), nodes[0])["info"]["sidecar"]
    prep = first["preprocessing"]
    tensor = fp["inputs"][0]
    return {
        "schema": 1,
        "format": "tflite",
        "runtime": "LiteRT (TensorFlow Lite); batch 1",
        "input": {"name": tensor["name"], "shape": tensor["shape"], "layout": tensor["layout"],
                  "dtype": "float32", "color": "RGB", "mean": list(prep["mean"]),
                  "std": list(prep["std"]), "resize": prep["resize"], "crop": prep["crop"],
                  "interpolation": prep.get("interpolation", "bilinear"),
                  "normalisation": prep.get("scale")},
        "labels": first.get("labels"),
        "models": dict(sorted(models.items())),
    }
