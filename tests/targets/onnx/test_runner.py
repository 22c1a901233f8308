"""The ONNX Runtime runner: threads, dynamic batch, output names."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from targets.onnx import OnnxTarget, OrtRunner


def _relu_model(path: Path) -> Path:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["input"], ["output"])], "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10  # onnxruntime 1.23 reads IR <= 11; onnx 1.19 writes 12 by default
    onnx.save(model, path)
    return path


def test_runner_runs_any_batch(tmp_path: Path) -> None:
    runner = OnnxTarget().runner(_relu_model(tmp_path / "m.onnx"), threads=2)
    assert isinstance(runner, OrtRunner) and runner.threads == 2
    with runner:
        assert runner.input_names() == ["input"]
        for batch in (1, 4):
            x = np.linspace(-1, 1, batch * 3, dtype=np.float32).reshape(batch, 3)
            out = runner.infer({"input": x})
            assert list(out) == ["output"]
            np.testing.assert_array_equal(out["output"], np.maximum(x, 0))
        assert runner._session.get_session_options().intra_op_num_threads == 2


def test_target_is_available_here() -> None:
    assert OnnxTarget().unavailable_reason() is None
    assert OnnxTarget().publish_name("onnx", "fp32", ".onnx") == "model.onnx"
