"""pipeline.localise.layer_map: every layer of the model joined by the exporter's own scopes,
whatever the model: BatchNorm folded away, a user's model with its own module names
(MobileNetV3's residual adds and squeeze-excite: test_mobilenet_v3.py)."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from pipeline.cache import Cache
from pipeline.localise.command import localise_artifact
from pipeline.localise.layer_map import LayerMap


def _artifact(report: dict, name: str) -> Path:
    return Path(next(n for n in report["nodes"] if n["name"] == name)["artifact"]["path"])


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


def test_a_users_model_maps_by_its_own_module_names(tiny_settings, tmp_path, corrupt,
                                                    run_mapped) -> None:
    (tmp_path / "net.py").write_text(USER_MODEL)
    outcome, layers = run_mapped({**tiny_settings, "model": f"{tmp_path / 'net.py'}:factory"},
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
