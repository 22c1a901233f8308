"""ONNX external data may not read outside the model's folder; a file that does not parse is one
clear error. Every model is built by the test; the secret stands for any file outside."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pipeline.onnx_guard import UnsafeModel, check_onnx_file
from targets.onnx import OrtRunner


def _model(location: str | None, offset: int = 0, length: int = 16) -> onnx.ModelProto:
    """y = x + w, w (4 floats) stored externally at ``location`` (inline when None)."""
    weight = numpy_helper.from_array(np.arange(4, dtype=np.float32), "w")
    if location is not None:
        weight.ClearField("raw_data")
        weight.data_location = TensorProto.EXTERNAL
        for key, value in (("location", location), ("offset", str(offset)),
                           ("length", str(length))):
            weight.external_data.add(key=key, value=value)
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
                              [weight])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


@pytest.fixture()
def folders(tmp_path: Path) -> tuple[Path, Path]:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.full(4, 42, np.float32).tobytes())
    return model_dir, secret


def _save(model: onnx.ModelProto, folder: Path) -> Path:
    path = folder / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def test_external_data_inside_the_folder_loads_and_runs(folders) -> None:
    model_dir, _ = folders
    (model_dir / "weights.bin").write_bytes(np.arange(4, dtype=np.float32).tobytes())
    path = _save(_model("weights.bin"), model_dir)
    check_onnx_file(path)
    with OrtRunner(path) as runner:
        out = runner.infer({"x": np.zeros(4, np.float32)})
    assert out["y"].tolist() == [0.0, 1.0, 2.0, 3.0]


@pytest.mark.parametrize("location, words", [
    ("../secret.bin", "leaves the folder"),
    ("sub/../../secret.bin", "leaves the folder"),
    ("ABSOLUTE", "absolute path"),
    ("..\\secret.bin", "leaves the folder"),
])
def test_a_location_leaving_the_folder_is_refused_before_any_session(folders, location,
                                                                     words) -> None:
    model_dir, secret = folders
    path = _save(_model(str(secret) if location == "ABSOLUTE" else location), model_dir)
    with pytest.raises(UnsafeModel, match=words):
        check_onnx_file(path)
    with pytest.raises(UnsafeModel, match=words):   # the runner checks before ONNX Runtime reads
        with OrtRunner(path):
            pass


def test_a_link_inside_the_folder_pointing_out_is_refused(folders) -> None:
    model_dir, secret = folders
    (model_dir / "weights.bin").symlink_to(secret)
    with pytest.raises(UnsafeModel, match="outside the model's folder"):
        check_onnx_file(_save(_model("weights.bin"), model_dir))


def test_a_range_past_the_end_of_the_file_is_refused(folders) -> None:
    model_dir, _ = folders
    (model_dir / "weights.bin").write_bytes(b"\0" * 8)
    with pytest.raises(UnsafeModel, match="past the end"):
        check_onnx_file(_save(_model("weights.bin", offset=4, length=16), model_dir))


def test_a_tensor_in_a_subgraph_is_checked_too(folders) -> None:
    model_dir, _ = folders
    inner = _model("../secret.bin").graph
    then = helper.make_graph([helper.make_node("Identity", ["w"], ["out"])], "then", [],
                             [helper.make_tensor_value_info("out", TensorProto.FLOAT, [4])],
                             [inner.initializer[0]])
    node = helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=then)
    graph = helper.make_graph([node], "g",
                              [helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(UnsafeModel, match="leaves the folder"):
        check_onnx_file(_save(model, model_dir))


@pytest.mark.parametrize("data", [b"", b"\x08\x07garbage\xff\xff\xff", b"not an onnx file"])
def test_a_file_that_does_not_parse_is_one_clear_error(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "broken.onnx"
    path.write_bytes(data)
    with pytest.raises(UnsafeModel, match="not a valid ONNX model|holds no graph"):
        check_onnx_file(path)
