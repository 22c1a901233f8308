"""The Python API: export() of a module that exists only in memory, cached by content; typed
results; the CLI's errors."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pipeline import export
from pipeline.api import ExportResult, config_overrides
from pipeline.errors import UserInputError

REPO = Path(__file__).resolve().parents[2]
FAST = {"bench": {"warmup": 10, "runs": 50, "batch": 2}, "parity": {"n_random": 2}}


def tiny_module() -> nn.Module:
    """A model defined here, in no file the CLI could import."""

    class Inline(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1),
                                      nn.BatchNorm2d(8), nn.ReLU6(),
                                      nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU())
            self.head = nn.Linear(8, 5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.body(x).mean((2, 3)))

    torch.manual_seed(0)
    return Inline().eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path, ExportResult]:
    root = tmp_path_factory.mktemp("api")
    model = tiny_module()
    result = export(model, targets=["onnx", "tflite"], precisions=["fp32"],
                    example_input=torch.zeros(1, 3, 32, 32), artifacts_dir=root, **FAST)
    return model, root, result


def test_an_in_memory_module_converts_and_passes(exported) -> None:
    _, root, result = exported
    assert result.passed and result.exit_code == 0, [(n.name, n.reason) for n in result.nodes]
    assert {n.name for n in result.nodes} >= {"load", "export_onnx", "tflite:fp32"}
    assert all(n.passed and n.status == "ran" for n in result.nodes)
    onnx, tflite = result.artifacts["onnx"]["fp32"], result.artifacts["tflite"]["fp32"]
    assert onnx.is_file() and tflite.is_file() and tflite.suffix == ".tflite"
    assert onnx.is_relative_to(root / "onnx" / "Inline_32")
    node = result.node("tflite:fp32")
    assert node.artifact == tflite and node.parity["max_rel"] <= 1e-4
    assert node.latency["runtime"] == "litert-xnnpack" and node.latency["median_ms"] > 0
    assert result.report_path.is_file() and result.report["model"]["label"] == "Inline_32"
    assert result.report["model"]["num_classes"] == 5     # from the module's own output
    with pytest.raises(KeyError, match="no node 'coreml:fp32'"):
        result.node("coreml:fp32")


def test_the_same_module_again_is_cached_and_a_changed_weight_is_not(exported) -> None:
    model, root, _ = exported
    again = export(model, targets=["onnx", "tflite"], precisions=["fp32"],
                   example_input=torch.zeros(1, 3, 32, 32), artifacts_dir=root, **FAST)
    assert again.passed and all(n.cached for n in again.nodes), \
        [(n.name, n.status) for n in again.nodes]
    with torch.no_grad():
        model.head.bias[0] += 0.5
    changed = export(model, targets=["onnx"], precisions=["fp32"], resolution=32,
                     artifacts_dir=root, **FAST)
    assert changed.passed
    assert {n.name: n.status for n in changed.nodes} == {
        "load": "ran", "trace": "ran", "fuse": "ran", "export_onnx": "ran"}


def test_bad_calls_raise_the_clis_typed_errors(tmp_path: Path) -> None:
    model = tiny_module()
    with pytest.raises(UserInputError, match="needs the input size"):
        export(model, artifacts_dir=tmp_path)
    with pytest.raises(UserInputError, match=r"shape \(N, 3, H, W\)"):
        export(model, example_input=np.zeros((1, 3, 32, 16)), artifacts_dir=tmp_path)
    with pytest.raises(UserInputError, match="example_input is 32x32 but resolution=64"):
        export(model, example_input=torch.zeros(1, 3, 32, 32), resolution=64)
    with pytest.raises(UserInputError, match="not a list"):
        export([model])
    with pytest.raises(UserInputError, match="model.onnx is not a file"):
        export("model.onnx")                 # ONNX input: checked before anything runs
    with pytest.raises(UserInputError, match="export\\(\\) options: unknown key no_such_option="):
        export("mobilenet_v2", no_such_option=1, artifacts_dir=tmp_path)
    assert not list(tmp_path.iterdir())   # nothing was written by a refused call


def test_the_clis_flat_option_names_go_into_their_sections() -> None:
    assert config_overrides({"lr": 0.1, "coreml_deployment_target": "iOS16", "out_dir": "r",
                             "eval_dir": None, "targets": ["onnx"]}) == {
        "train": {"lr": 0.1}, "coreml": {"deployment_target": "iOS16"}, "out": "r",
        "targets": ("onnx",)}


def test_the_readme_example_runs_as_written(tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Python API", 1)[1]
    (code,) = re.findall(r"```python\n(.*?)```", section.split("\n## ", 1)[0], re.S)[:1]
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "passed: True" in done.stdout, done.stdout
    assert list((tmp_path / "artifacts" / "onnx").rglob("model.onnx"))
