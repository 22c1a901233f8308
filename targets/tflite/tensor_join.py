"""TFLite tensors named in ONNX terms, from the names onnx2tf recorded at conversion.

onnx2tf builds one TF op per ONNX node and keeps the ONNX-name -> TF-tensor map while it does
(the conversion records it as ``info.tensor_names``); the TFLite converter then names each
tensor after its TF op, prefixed with the Keras model's name (``model_7/``), and a kernel that
fuses several TF ops (a conv with its ReLU6) joins their names with ``;``. Such a tensor holds
the value of the last of the ONNX layers it carries.
"""
from __future__ import annotations

import contextlib
import re
from typing import Any, Iterator

import numpy as np

from targets.base import IntermediatesUnavailable

_MODEL_PREFIX = re.compile(r"^[^/]+/")
_OWN_OPERATOR = re.compile(r"^tf\.__operators__\.")


@contextlib.contextmanager
def recorded_tensor_names(module: Any) -> Iterator[dict[str, list[Any]]]:
    """While onnx2tf converts: its own ONNX-name -> TF-tensor bookkeeping, read where it hands
    it over (``get_tf_model_outputs(tf_layers_dict=...)``), as {ONNX name: [TF name, NHWC?]}."""
    names: dict[str, list[Any]] = {}
    outputs_of = module.get_tf_model_outputs

    def record(**kw: Any) -> Any:
        for onnx_name, entry in kw["tf_layers_dict"].items():
            tf_name = getattr(entry.get("tf_node"), "name", None) if isinstance(entry, dict) \
                else None
            if isinstance(tf_name, str):
                names[onnx_name] = [re.sub(r":0$", "", tf_name), bool(entry.get("nhwc"))]
        return outputs_of(**kw)

    module.get_tf_model_outputs = record
    try:
        yield names
    finally:
        module.get_tf_model_outputs = outputs_of


def tflite_names(tflite_tensors: list[str], layers: Any,
                 info: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """ONNX layer tensor -> (the TFLite tensor holding its value, NHWC?), from names alone."""
    names = info.get("tensor_names")
    if not isinstance(names, dict) or not names:
        raise IntermediatesUnavailable(
            "the node's record has no onnx2tf tensor names (converted by a version before "
            "localisation); rerun the pipeline with --force tflite to record them")
    by_tf: dict[str, tuple[str, bool]] = {}
    for onnx_name, entry in names.items():
        if isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str):
            by_tf.setdefault(entry[0], (str(onnx_name), bool(entry[1])))
    order = {layer.tensor: i for i, layer in enumerate(layers.layers)}
    joined: dict[str, tuple[str, bool]] = {}
    for tflite_name in tflite_tensors:
        parts = tflite_name.split(";")
        hits = [by_tf.get(part) or by_tf.get(_MODEL_PREFIX.sub("", part, count=1))
                for part in parts]
        # a kernel that also folded in an operator onnx2tf emits inside its own decompositions
        # (HardSigmoid's ``x * alpha + beta`` as tf.__operators__ ops, merged into the conv
        # before it) holds a value no ONNX tensor has: not joined
        if any(hit is None and _OWN_OPERATOR.match(_MODEL_PREFIX.sub("", part, count=1))
               for hit, part in zip(hits, parts)):
            continue
        carried = [hit for hit in hits if hit is not None and hit[0] in order]
        if carried:
            onnx_name, nhwc = max(carried, key=lambda c: order[c[0]])
            joined.setdefault(onnx_name, (tflite_name, nhwc))
    return joined


def join_tflite(tensors: dict[str, np.ndarray], layers: Any,
                info: dict[str, Any]) -> dict[str, tuple[str, np.ndarray]]:
    """ONNX layer tensor -> (TFLite tensor name, value in NCHW)."""
    joined = {}
    for onnx_name, (tflite_name, nhwc) in tflite_names(list(tensors), layers, info).items():
        value = tensors[tflite_name]
        joined[onnx_name] = (tflite_name, value.transpose(0, 3, 1, 2)
                             if nhwc and value.ndim == 4 else value)
    return joined


def op_output_names(path: Any) -> list[str]:
    """The names of a .tflite's op outputs, read without running it."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    details = {d["index"]: d["name"] for d in interpreter.get_tensor_details()}
    return [details[i] for op in interpreter._get_ops_details() for i in op["outputs"]
            if i in details]
