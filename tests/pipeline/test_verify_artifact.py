"""`verify`: the published ONNX passes again; a deliberately perturbed copy must fail."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from pipeline.errors import UserInputError
from pipeline.verify_artifact import verify_artifact


def _published_onnx(tiny_run) -> Path:
    node = next(n for n in tiny_run.report["nodes"] if n["name"] == "export_onnx")
    return Path(node["artifact"]["path"])


def test_published_artifact_verifies(tiny_run) -> None:
    result = verify_artifact(_published_onnx(tiny_run), tiny_run.out_dir)
    assert result["verdict"] == "pass" and result["matches_run"]
    assert result["node"] == "export_onnx"


def test_perturbed_weights_fail(tiny_run, tmp_path: Path) -> None:
    model = onnx.load(_published_onnx(tiny_run))
    largest = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    weights = numpy_helper.to_array(largest).copy()
    weights.flat[: weights.size // 10] *= 1.5          # a converter that "silently changes numbers"
    largest.CopyFrom(numpy_helper.from_array(weights, largest.name))
    bad = tmp_path / "perturbed.onnx"
    onnx.save(model, bad)
    result = verify_artifact(bad, tiny_run.out_dir)
    assert result["verdict"] == "fail" and not result["matches_run"]
    assert any("max_rel" in f for f in result["failures"])


def test_verify_refuses_unknown_files(tiny_run, tmp_path: Path) -> None:
    other = tmp_path / "model.bin"
    other.write_bytes(b"\0" * 16)
    with pytest.raises(UserInputError, match="no runner for '.bin'"):
        verify_artifact(other, tiny_run.out_dir)
    with pytest.raises(UserInputError, match="holds no report.json"):
        verify_artifact(_published_onnx(tiny_run), tmp_path)
