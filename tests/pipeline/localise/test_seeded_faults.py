"""A fault seeded in one layer of a converted artifact is named by its torch module path, on
every CPU-verifiable target; the same artifact uncorrupted names no layer."""
from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.localise.command import localise_artifact

#: the seeded layer: block 5's expansion conv (a weighted layer mid-network whose output both
#: runtimes keep, fused with its ReLU6 in TFLite)
SEEDED = "features.5.conv.0.0"


def _node(report: dict, name: str) -> dict:
    return next(n for n in report["nodes"] if n["name"] == name)


def _artifact(report: dict, name: str) -> Path:
    return Path(_node(report, name)["artifact"]["path"])


def _convs(path: Path) -> list:
    import onnx

    return [n for n in onnx.load(str(path)).graph.node if n.op_type == "Conv"]


def _seeded_layer(run: dict):
    return next(layer for layer in run["layers"].layers if layer.module == SEEDED)


@pytest.mark.parametrize("name", ["export_onnx", "onnx:int8", "tflite:fp32", "tflite:int8",
                                  "coreml:fp32", "coreml:int8"])
def test_an_intact_artifact_names_no_layer(localise_run, name) -> None:
    # the condition this test stands on: the node passed its gate, so no layer's error reaches
    # the output at the layer tolerance (int8 noise the next layers absorb is only transient)
    assert _node(localise_run["report"], name)["parity"]["verdict"] == "pass"
    record = localise_artifact(_artifact(localise_run["report"], name), localise_run["run_dir"],
                               node_name=name)
    assert record["first_divergent"] is None, record["first_divergent"]
    assert record["compared"] >= 40 and len(record["curve"]) == record["compared"]
    assert record["node"] == name


@pytest.mark.parametrize("name", ["export_onnx", "onnx:int8"])
def test_onnx_runtime_names_the_seeded_layer(localise_run, corrupt, tmp_path, name) -> None:
    report = localise_run["report"]
    layer = _seeded_layer(localise_run)
    source = _artifact(report, name)
    # quantization keeps the convs in graph order: the seeded one is at the same position
    position = [n.name for n in _convs(_artifact(report, "export_onnx"))].index(layer.onnx_node)
    node = _convs(source)[position].name
    bad = tmp_path / "bad.onnx"
    corrupt.onnx(source, bad, node)
    record = localise_artifact(bad, localise_run["run_dir"], node_name=name)
    assert record["first_divergent"] is not None
    assert record["first_divergent"]["torch_module"] == SEEDED


@pytest.mark.parametrize("name", ["tflite:fp32", "tflite:int8"])
def test_litert_names_the_seeded_layer(localise_run, corrupt, tmp_path, name) -> None:
    report = localise_run["report"]
    layer = _seeded_layer(localise_run)
    tf_name = _node(report, name)["info"]["tensor_names"][layer.tensor][0]
    bad = tmp_path / "bad.tflite"
    corrupt.tflite(_artifact(report, name), bad, tf_name)
    record = localise_artifact(bad, localise_run["run_dir"], node_name=name)
    first = record["first_divergent"]
    assert first is not None and first["torch_module"] == SEEDED, first
    assert first["fused_with"], "TFLite computes the conv and its ReLU6 in one kernel"


def test_the_mil_evaluator_names_the_seeded_layer(localise_run, corrupt, tmp_path) -> None:
    report = localise_run["report"]
    layer = _seeded_layer(localise_run)
    bad = tmp_path / "bad.mlpackage"
    corrupt.mlpackage(_artifact(report, "coreml:fp32"), bad, layer.fx_node)
    record = localise_artifact(bad, localise_run["run_dir"], node_name="coreml:fp32")
    assert record["first_divergent"]["torch_module"] == SEEDED
    assert record["first_divergent"]["target_tensor"] == layer.fx_node


def test_the_mil_evaluator_names_the_seeded_layer_of_an_int8_package(localise_run, corrupt,
                                                                     tmp_path) -> None:
    report = localise_run["report"]
    layer = _seeded_layer(localise_run)
    bad = tmp_path / "bad_int8.mlpackage"
    corrupt.mlpackage_int8(_artifact(report, "coreml:int8"), bad, f"{layer.fx_node}_cast_fp16")
    record = localise_artifact(bad, localise_run["run_dir"], node_name="coreml:int8")
    assert record["first_divergent"]["torch_module"] == SEEDED
    assert record["precision"] == "int8"
