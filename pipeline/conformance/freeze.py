"""A node test as the product's TFLite path takes it: one data input, the rest constants.

The suite feeds weights (a Conv's W, a Reshape's shape, a Resize's scales) as graph inputs; a
deployed model holds them as initializers, and onnx2tf needs them constant (a Conv with a runtime
kernel, a Reshape with a runtime shape are not mobile graphs). So every input after the first is
frozen into an initializer holding the case's own test value, and the first stays the input.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.conformance.cases import Case


def _tensors(folder: Path, prefix: str) -> list[np.ndarray]:
    import onnx
    from onnx import numpy_helper

    arrays = []
    for index in range(len(list(folder.glob(f"{prefix}_*.pb")))):
        tensor = onnx.TensorProto()
        tensor.ParseFromString((folder / f"{prefix}_{index}.pb").read_bytes())
        arrays.append(numpy_helper.to_array(tensor))
    return arrays


def frozen_case(case: Case, dest: Path) -> dict[str, Any]:
    """Write the frozen model and the case's data (``.npy``) under ``dest``; the JSON case the
    child (:func:`targets.tflite.conformance.run_case`) takes."""
    import onnx
    from onnx import numpy_helper

    dest.mkdir(parents=True, exist_ok=True)
    model = onnx.load(str(case.model))
    inputs, outputs = _tensors(case.data, "input"), _tensors(case.data, "output")
    graph_inputs = [v for v in model.graph.input
                    if v.name not in {i.name for i in model.graph.initializer}]
    kept = graph_inputs[:1]
    for value, array in zip(graph_inputs[1:], inputs[1:], strict=True):   # a value for each
        model.graph.initializer.append(numpy_helper.from_array(array, value.name))
    del model.graph.input[:]
    model.graph.input.extend(kept)
    model_path = dest / "model.onnx"
    onnx.save(model, str(model_path))
    feed_paths, want_paths = [], []
    for index, array in enumerate(inputs[:1]):
        feed_paths.append(str(dest / f"input_{index}.npy"))
        np.save(feed_paths[-1], array)
    for index, array in enumerate(outputs):
        want_paths.append(str(dest / f"output_{index}.npy"))
        np.save(want_paths[-1], array)
    return {"name": case.name, "model": str(model_path), "inputs": feed_paths,
            "outputs": want_paths, "output_names": [o.name for o in model.graph.output],
            "rtol": case.rtol, "atol": case.atol}
