"""Fixtures of the localisation tests: a trained tiny run on every CPU-verifiable target, and
seeded faults: one layer's weights negated (and tripled, in float) in the converted file itself
(an ONNX initializer, a TFLite buffer, a MIL const in weight.bin)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest


def _negated(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind in "iu":
        info = np.iinfo(values.dtype)
        return np.clip(-values.astype(np.int32), info.min + 1, info.max).astype(values.dtype)
    return (-3 * values).astype(values.dtype)


def _replace_once(data: bytearray, old: bytes, new: bytes, what: str) -> None:
    at = data.find(old)
    assert at >= 0 and data.find(old, at + 1) < 0, f"{what}: weights not found exactly once"
    data[at:at + len(old)] = new


def corrupt_onnx(source: Path, dest: Path, onnx_node: str) -> None:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(source))
    node = next(n for n in model.graph.node if n.name == onnx_node)
    weight = node.input[1]
    dequantize = next((n for n in model.graph.node if weight in n.output
                       and n.op_type == "DequantizeLinear"), None)
    if dequantize is not None:          # a Q/DQ model: the int8 weights feed a DequantizeLinear
        weight = dequantize.input[0]
    init = next(i for i in model.graph.initializer if i.name == weight)
    init.CopyFrom(numpy_helper.from_array(_negated(numpy_helper.to_array(init)), init.name))
    onnx.save(model, str(dest))


def corrupt_tflite(source: Path, dest: Path, tf_name: str) -> None:
    """The filter of the op whose output tensor carries ``tf_name`` (onnx2tf's TF name)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(source))
    interpreter.allocate_tensors()
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    op = next(o for o in interpreter._get_ops_details()
              if any(tf_name in details[i]["name"].split(";")[-1:] or
                     any(part.endswith("/" + tf_name) for part in details[i]["name"].split(";"))
                     for i in o["outputs"]))
    weights = interpreter.get_tensor(op["inputs"][1])
    data = bytearray(source.read_bytes())
    _replace_once(data, weights.tobytes(), _negated(weights).tobytes(), source.name)
    dest.write_bytes(bytes(data))


def corrupt_mlpackage(source: Path, dest: Path, fx_node: str) -> None:
    """The weight const of the MIL conv named after ``fx_node``, in the package's weight.bin."""
    from targets.coreml.mil import MilEvaluator

    shutil.copytree(source, dest)
    evaluator = MilEvaluator(dest)
    op = next(o for o in evaluator.ops if o.name == fx_node)
    (kind, const), = op.inputs["weight"]
    assert kind == "name"
    weights = evaluator.consts[const].numpy()
    blob = next(dest.rglob("weight.bin"))
    data = bytearray(blob.read_bytes())
    stored = weights.astype(np.float32)
    if data.find(stored.tobytes()) < 0:
        stored = weights.astype(np.float16)
    _replace_once(data, stored.tobytes(), _negated(stored).tobytes(), blob.name)
    blob.write_bytes(bytes(data))


@pytest.fixture(scope="session")
def corrupt():
    """The fault seeders: ``corrupt.onnx(src, dst, onnx_node)``, ``corrupt.tflite(src, dst,
    tf_name)``, ``corrupt.mlpackage(src, dst, fx_node)``, ``corrupt.mlpackage_int8(src, dst,
    mil_conv)``."""
    from types import SimpleNamespace

    return SimpleNamespace(onnx=corrupt_onnx, tflite=corrupt_tflite, mlpackage=corrupt_mlpackage,
                           mlpackage_int8=corrupt_mlpackage_int8)


def _run_and_map(settings: dict, root: Path, **overrides):
    from pipeline.cache import Cache
    from pipeline.config import PipelineConfig
    from pipeline.localise.layer_map import LayerMap
    from pipeline.run import execute

    config = PipelineConfig.model_validate({**settings, "artifacts_dir": root / "artifacts",
                                            "out": root / "report", **overrides})
    outcome = execute(config)
    export = next(n for n in outcome.report["nodes"] if n["name"] == "export_onnx")
    layers = LayerMap.load(Cache(config.cache_dir).object_path(
        export["info"]["layer_map"]["sha256"]))
    return outcome, layers


@pytest.fixture(scope="session")
def run_mapped():
    """``run_mapped(settings, root, **overrides)``: a run of ``settings`` under ``root`` and
    its layer map, ``(outcome, layer_map)``."""
    return _run_and_map


@pytest.fixture(scope="session")
def localise_run(trained_tiny, tiny_settings, tmp_path_factory):
    """The trained tiny MobileNetV2 through ONNX, TFLite and Core ML at fp32 and int8 (digits
    calibration and evaluation): its report folder, report and layer map."""
    root = tmp_path_factory.mktemp("localise")
    outcome, layers = _run_and_map(tiny_settings, root, dataset="digits",
                                   weights=trained_tiny["weights"],
                                   targets=["onnx", "tflite", "coreml"],
                                   precisions=["fp32", "int8"])
    return {"run_dir": outcome.out_dir, "report": outcome.report, "layers": layers}


def corrupt_mlpackage_int8(source: Path, dest: Path, mil_conv: str) -> None:
    """The int8 weights of the MIL conv named ``mil_conv`` (a constexpr's quantized blob in
    weight.bin, read from the program itself), negated."""
    import struct

    from targets.coreml.mlpackage import blob_file, load_spec

    shutil.copytree(source, dest)
    spec, layout = load_spec(dest)
    function = spec.mlProgram.functions["main"]
    ops = list(function.block_specializations[function.opset].operations)
    conv = next(op for op in ops if op.type == "conv" and op.outputs[0].name == mil_conv)
    weight = conv.inputs["weight"].arguments[0].name
    producer = next(op for op in ops if op.outputs and op.outputs[0].name == weight)
    values = list(producer.attributes.values()) + [
        b.value for arg in producer.inputs.values() for b in arg.arguments
        if b.WhichOneof("binding") == "value"]
    blobs = [v.blobFileValue for v in values if v.WhichOneof("value") == "blobFileValue"]
    blob = max(blobs, key=lambda b: b.offset) if len(blobs) > 1 else blobs[0]
    path = blob_file(layout, blob.fileName)
    data = bytearray(path.read_bytes())
    _sentinel, _dtype, size, offset = struct.unpack_from("<IIQQ", data, blob.offset)
    quantized = np.frombuffer(bytes(data[offset:offset + size]), dtype=np.int8)
    data[offset:offset + size] = _negated(quantized).tobytes()
    path.write_bytes(bytes(data))
