"""pipeline.localise.layer_map: every layer of the model joined by the exporter's own scopes,
whatever the model: BatchNorm folded away, MobileNetV3's residual adds and squeeze-excite,
a user's model with its own module names."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from pipeline.cache import Cache
from pipeline.config import PipelineConfig
from pipeline.localise.command import localise_artifact
from pipeline.localise.layer_map import LayerMap
from pipeline.run import execute


def _run(settings: dict, root: Path, **overrides):
    config = PipelineConfig.model_validate({**settings, "artifacts_dir": root / "artifacts",
                                            "out": root / "report", **overrides})
    outcome = execute(config)
    export = next(n for n in outcome.report["nodes"] if n["name"] == "export_onnx")
    layers = LayerMap.load(Cache(config.cache_dir).object_path(
        export["info"]["layer_map"]["sha256"]))
    return outcome, layers


def _artifact(report: dict, name: str) -> Path:
    return Path(next(n for n in report["nodes"] if n["name"] == name)["artifact"]["path"])


@pytest.fixture(scope="module")
def v3_run(tiny_settings, tmp_path_factory):
    return _run({**tiny_settings, "model": "mobilenet_v3_small", "width": 0.5},
                tmp_path_factory.mktemp("v3"), targets=["onnx", "tflite", "coreml"])


def test_batchnorm_folded_into_its_conv_does_not_break_the_map(tiny_run) -> None:
    report = tiny_run.report
    export = next(n for n in report["nodes"] if n["name"] == "export_onnx")
    layers = LayerMap.load(Cache(Path(report["run"]["cache_dir"])).object_path(
        export["info"]["layer_map"]["sha256"]))
    modules = {layer.module for layer in layers.layers}
    # the stem is Conv2d (features.0.0), BatchNorm (features.0.1), ReLU6 (features.0.2): the
    # folded conv carries the conv's name and the BatchNorm has no tensor of its own
    assert {"features.0.0", "features.0.2"} <= modules and "features.0.1" not in modules
    assert layers.unjoined == [] and export["info"]["layer_map"]["unjoined"] == 0
    convs = [layer for layer in layers.layers if layer.op_type == "Conv"]
    assert len(convs) == 52 and all(layer.inputs for layer in layers.layers)
    published = _artifact(report, "export_onnx").parent / "layer_map.json"
    assert LayerMap.from_json(json.loads(published.read_text())).layers == layers.layers


def test_mobilenet_v3_maps_every_layer_residual_and_squeeze_excite(v3_run) -> None:
    outcome, layers = v3_run
    assert layers.unjoined == []
    ops = {layer.op_type for layer in layers.layers}
    assert {"Add", "Mul", "HardSigmoid", "HardSwish", "GlobalAveragePool"} <= ops or \
        {"Add", "Mul", "HardSwish"} <= ops, ops
    squeeze = [layer for layer in layers.layers if layer.module.endswith(".fc1")]
    assert squeeze, "the squeeze-excite convs are named by their module"
    residual = [layer for layer in layers.layers if layer.op_type == "Add"]
    assert residual and all(len(layer.inputs) == 2 for layer in residual)
    for name in ("export_onnx", "tflite:fp32", "coreml:fp32"):
        record = localise_artifact(_artifact(outcome.report, name), outcome.out_dir)
        assert record["first_divergent"] is None, (name, record["first_divergent"])
        assert record["compared"] >= 0.6 * len(layers.layers), (name, record["compared"])


@pytest.mark.parametrize("name", ["export_onnx", "tflite:fp32", "coreml:fp32"])
def test_mobilenet_v3_seeded_fault_in_squeeze_excite_is_found(v3_run, corrupt, tmp_path,
                                                               name) -> None:
    outcome, layers = v3_run
    seeded = next(layer for layer in layers.layers if layer.module.endswith(".fc1"))
    node = next(n for n in outcome.report["nodes"] if n["name"] == name)
    source = _artifact(outcome.report, name)
    bad = tmp_path / f"bad{source.suffix}"
    if name == "export_onnx":
        corrupt.onnx(source, bad, seeded.onnx_node)
    elif name == "tflite:fp32":
        corrupt.tflite(source, bad, node["info"]["tensor_names"][seeded.tensor][0])
    else:
        corrupt.mlpackage(source, bad, seeded.fx_node)
    record = localise_artifact(bad, outcome.out_dir, node_name=name)
    assert record["first_divergent"]["torch_module"] == seeded.module


USER_MODEL = textwrap.dedent('''
    from torch import nn

    class Stem(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
            self.norm = nn.BatchNorm2d(8)
            self.act = nn.ReLU()

        def forward(self, x):
            return self.act(self.norm(self.conv(x)))

    class Net(nn.Module):
        def __init__(self, num_classes=10):
            super().__init__()
            self.stem = Stem()
            self.mixer = nn.Conv2d(8, 16, 1)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.head = nn.Linear(16, num_classes)

        def forward(self, x):
            x = self.pool(self.mixer(self.stem(x)) + 1.0)
            return self.head(x.flatten(1))

    def factory(num_classes=10):
        return Net(num_classes)
''')


def test_a_users_model_maps_by_its_own_module_names(tiny_settings, tmp_path, corrupt) -> None:
    (tmp_path / "net.py").write_text(USER_MODEL)
    outcome, layers = _run({**tiny_settings, "model": f"{tmp_path / 'net.py'}:factory"},
                           tmp_path / "run", width=1.0)
    modules = [layer.module for layer in layers.layers]
    assert {"stem.conv", "stem.act", "mixer", "pool", "head"} <= set(modules), modules
    assert "stem.norm" not in modules and layers.unjoined == []
    mixer = next(layer for layer in layers.layers if layer.module == "mixer")
    bad = tmp_path / "bad.onnx"
    corrupt.onnx(_artifact(outcome.report, "export_onnx"), bad, mixer.onnx_node)
    record = localise_artifact(bad, outcome.out_dir, node_name="export_onnx")
    assert record["first_divergent"]["torch_module"] == "mixer"


def test_a_layer_map_of_the_wrong_shape_is_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="schema"):
        LayerMap.from_json({"layers": []})
    with pytest.raises(ValueError, match="wrong shape"):
        LayerMap.from_json({"schema": 1, "graph_inputs": ["input"], "layers": [{"tensor": 1}],
                            "unjoined": []})


def test_the_run_writes_its_layer_map_in_every_naming(v3_run) -> None:
    """layer_map.json beside the report: per layer the tensor it became in each artifact."""
    outcome, layers = v3_run
    written = json.loads((outcome.out_dir / "layer_map.json").read_text())
    assert [row["onnx_tensor"] for row in written["layers"]] == [l.tensor for l in layers.layers]
    assert {n["name"] for n in written["nodes"]} == {"export_onnx", "tflite:fp32", "coreml:fp32"}
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
