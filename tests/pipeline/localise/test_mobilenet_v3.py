"""MobileNetV3 (residual adds, squeeze-excite, hard-swish), trained: every layer is mapped, in
every target's naming; a fault seeded in one layer of a converted artifact is named on every
CPU-verifiable target at fp32 and int8, and the intact artifacts name none with the default
layer tolerances."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.localise.command import localise_artifact

NODES = ["export_onnx", "tflite:fp32", "coreml:fp32", "onnx:int8", "tflite:int8", "coreml:int8"]

#: the seeded layers: block 5's expansion conv (main branch, hard-swish after it, no kernel
#: fusion on any target) and the first squeeze-excite squeeze (a 1x1 conv on 8 pooled values)
MAIN = "features.5.block.0.0"
SQUEEZE = "features.1.block.1.fc1"
#: where each is seeded: the squeeze at fp32 everywhere and at int8 where its effect reaches
#: the output (ONNX Runtime int8 absorbs it: output cosine 0.81 on the Xeon it was measured
#: on, within the int8 layer limit, so it is listed as transient there and not asserted)
SEEDS = [(name, SQUEEZE) for name in NODES[:3]] + [(name, MAIN) for name in NODES[3:]] + \
    [("tflite:int8", SQUEEZE), ("coreml:int8", SQUEEZE)]


@pytest.fixture(scope="module")
def v3_run(trained_tiny_v3, tiny_settings, run_mapped, tmp_path_factory):
    """The trained tiny MobileNetV3-Small through ONNX, TFLite and Core ML at fp32 and int8
    (digits): the run's outcome and its layer map."""
    return run_mapped({**tiny_settings, "model": "mobilenet_v3_small", "width": 0.5},
                      tmp_path_factory.mktemp("v3"), dataset="digits",
                      weights=trained_tiny_v3["weights"], targets=["onnx", "tflite", "coreml"],
                      precisions=["fp32", "int8"])


def _node(report: dict, name: str) -> dict:
    return next(n for n in report["nodes"] if n["name"] == name)


def _artifact(report: dict, name: str) -> Path:
    return Path(_node(report, name)["artifact"]["path"])


def _corrupted(outcome, layers, corrupt, tmp_path: Path, name: str, module: str):
    """The node's artifact with ``module``'s weights negated: (path, seeded layer)."""
    import onnx

    report = outcome.report
    layer = next(layer for layer in layers.layers if layer.module == module)
    source = _artifact(report, name)
    bad = tmp_path / f"bad{source.suffix}"
    if name in ("export_onnx", "onnx:int8"):
        # quantization keeps the convs in graph order: the seeded one is at the same position
        def convs(path: Path) -> list[str]:
            return [n.name for n in onnx.load(str(path)).graph.node if n.op_type == "Conv"]
        position = convs(_artifact(report, "export_onnx")).index(layer.onnx_node)
        corrupt.onnx(source, bad, convs(source)[position])
    elif name.startswith("tflite"):
        corrupt.tflite(source, bad, _node(report, name)["info"]["tensor_names"][layer.tensor][0])
    elif name == "coreml:fp32":
        corrupt.mlpackage(source, bad, layer.fx_node)
    else:
        corrupt.mlpackage_int8(source, bad, f"{layer.fx_node}_cast_fp16")
    return bad, layer


@pytest.mark.parametrize("name", NODES)
def test_an_intact_v3_artifact_names_no_layer(v3_run, name) -> None:
    outcome, layers = v3_run
    node = _node(outcome.report, name)
    # the condition this test stands on: the node passed its gate (output cosine >= 0.99 on
    # real images at int8), so no layer's error reaches the output at the layer tolerance
    assert node["parity"]["verdict"] == "pass", node["parity"]
    record = localise_artifact(_artifact(outcome.report, name), outcome.out_dir, node_name=name)
    assert record["first_divergent"] is None, (name, record["first_divergent"])
    assert record["compared"] >= 0.6 * len(layers.layers), (name, record["compared"])


@pytest.mark.parametrize(("name", "module"), SEEDS)
def test_a_seeded_v3_fault_is_named_on_every_target(v3_run, corrupt, tmp_path, name,
                                                    module) -> None:
    outcome, layers = v3_run
    bad, layer = _corrupted(outcome, layers, corrupt, tmp_path, name, module)
    record = localise_artifact(bad, outcome.out_dir, node_name=name)
    output = record["curve"][-1]
    assert output["cosine"] < record["limit"]["min_cosine"] or (
        record["limit"]["max_rel"] is not None
        and output["max_rel"] > record["limit"]["max_rel"]), \
        f"{name}: the seeded fault does not reach the output ({output}); nothing to localise"
    first = record["first_divergent"]
    assert first is not None and first["torch_module"] == layer.module, (name, first)
    assert record["precision"] == name.split(":")[-1].replace("export_onnx", "fp32")


def test_mobilenet_v3_maps_every_layer_residual_and_squeeze_excite(v3_run) -> None:
    outcome, layers = v3_run
    assert layers.unjoined == []
    ops = {layer.op_type for layer in layers.layers}
    # the exporter's decomposition: the squeeze's pool is a ReduceMean, the gate a HardSigmoid
    assert {"Add", "Mul", "HardSigmoid", "HardSwish", "ReduceMean"} <= ops, ops
    squeeze = [layer for layer in layers.layers if layer.module.endswith(".fc1")]
    assert squeeze, "the squeeze-excite convs are named by their module"
    residual = [layer for layer in layers.layers if layer.op_type == "Add"]
    assert residual and all(len(layer.inputs) == 2 for layer in residual)


def test_the_run_writes_its_layer_map_in_every_naming(v3_run) -> None:
    """layer_map.json beside the report: per layer the tensor it became in each artifact."""
    outcome, layers = v3_run
    written = json.loads((outcome.out_dir / "layer_map.json").read_text())
    assert [row["onnx_tensor"] for row in written["layers"]] == [l.tensor for l in layers.layers]
    assert {n["name"] for n in written["nodes"]} == set(NODES)
    rows = {row["onnx_tensor"]: row for row in written["layers"]}
    assert all(row["targets"]["export_onnx"] == name for name, row in rows.items())
    relu6_fused = [row["targets"]["tflite:fp32"] for row in written["layers"]
                   if row["targets"]["tflite:fp32"] and ";" in row["targets"]["tflite:fp32"]]
    assert relu6_fused, "TFLite's fused kernels carry several TF names"
    assert sum(row["targets"]["coreml:fp32"] == row["fx_node"] for row in rows.values()) \
        >= 0.9 * len(rows)
    before = (outcome.out_dir / "layer_map.json").read_bytes()
    from pipeline.localise.run_map import write_run_layer_map

    write_run_layer_map(outcome.report, outcome.out_dir)   # from the remembered names
    assert (outcome.out_dir / "layer_map.json").read_bytes() == before
