"""--model model.onnx: the chain starts at the ONNX node with ONNX Runtime as the reference;
damaged or unsuitable models are one clear error and publish nothing."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pipeline.config import PipelineConfig
from pipeline.errors import UserInputError
from pipeline.onnx_input import REFERENCE_LABEL, inspect_onnx, onnx_digest
from pipeline.run import execute


def tiny_onnx(path: Path, shape: list = (1, 3, 8, 8), opset: int = 17, inputs: int = 1,
              external: str | None = None, ir_version: int = 8) -> Path:
    """GlobalAveragePool -> Flatten -> MatMul(3x2): a valid classifier for ``shape``."""
    xs = [helper.make_tensor_value_info(f"x{i}", TensorProto.FLOAT, list(shape))
          for i in range(inputs)]
    weight = numpy_helper.from_array(np.ones((3, 2), np.float32), "w")
    if external is not None:
        weight.ClearField("raw_data")
        weight.data_location = TensorProto.EXTERNAL
        weight.external_data.add(key="location", value=external)
    nodes = [helper.make_node("GlobalAveragePool", ["x0"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("MatMul", ["f", "w"], ["y"])]
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [shape[0], 2])
    graph = helper.make_graph(nodes, "tiny", xs, [y], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              ir_version=ir_version)
    path.write_bytes(model.SerializeToString())
    return path


def config_for(model: Path, tmp_path: Path, **extra) -> PipelineConfig:
    return PipelineConfig.model_validate({
        "model": str(model), "targets": ["onnx", "tflite"], "precisions": ["fp32", "int8"],
        "artifacts_dir": tmp_path / "artifacts", "out": tmp_path / "report",
        "bench": {"warmup": 10, "runs": 50, "batch": 2}, "parity": {"n_random": 2}, **extra})


def test_a_valid_model_is_described(tmp_path: Path) -> None:
    facts = inspect_onnx(tiny_onnx(tmp_path / "m.onnx", shape=["batch", 3, 8, 8]))
    assert (facts.input_name, facts.resolution, facts.num_classes, facts.opset, facts.params) \
        == ("x0", 8, 2, 17, 6)


@pytest.mark.parametrize("make, problem", [
    (lambda p: p.write_bytes(tiny_onnx(p).read_bytes()[:40]) and p, "is not a valid ONNX model"),
    (lambda p: tiny_onnx(p, opset=9), "opset 9; the converters take opsets 13 to 21"),
    (lambda p: tiny_onnx(p, inputs=2), "has 2 inputs"),
    (lambda p: tiny_onnx(p, ir_version=12), "IR version 12; ONNX Runtime reads up to IR 11"),
    (lambda p: tiny_onnx(p, shape=[1, 3, "h", 8]), "a dynamic height or width; pass --resolution N"),
    (lambda p: tiny_onnx(p, shape=[1, 8, 8, 3]), "(NHWC?)"),
    (lambda p: tiny_onnx(p, shape=[4, 3, 8, 8]), "a fixed batch of 4"),
    (lambda p: tiny_onnx(p, external="../outside.bin"), "which leaves the folder"),
])
def test_bad_models_are_one_clear_error_and_publish_nothing(tmp_path: Path, make,
                                                            problem: str) -> None:
    (tmp_path / "outside.bin").write_bytes(b"\0" * 24)
    folder = tmp_path / "model"
    folder.mkdir()
    path = make(folder / "m.onnx")
    with pytest.raises(UserInputError, match=problem.replace("(", r"\(").replace("?", r"\?")
                       .replace(")", r"\)")):
        execute(config_for(path, tmp_path))
    assert not (tmp_path / "artifacts").exists() or not any(
        (tmp_path / "artifacts").glob("*/*/*"))


def test_core_ml_and_training_are_refused_with_the_reason(tmp_path: Path) -> None:
    path = tiny_onnx(tmp_path / "m.onnx")
    with pytest.raises(UserInputError, match="Core ML cannot start from an ONNX model"):
        execute(config_for(path, tmp_path, targets=["coreml"]))
    with pytest.raises(UserInputError, match="--finetune-epochs needs a PyTorch model"):
        execute(config_for(path, tmp_path, finetune_epochs=1, dataset="digits",
                           num_classes=2))
    with pytest.raises(UserInputError, match="--resolution 64 but .* has 8"):
        execute(config_for(path, tmp_path, resolution=64))


def test_the_digest_covers_external_data(tmp_path: Path) -> None:
    data = tmp_path / "w.bin"
    data.write_bytes(np.ones((3, 2), np.float32).tobytes())
    path = tiny_onnx(tmp_path / "m.onnx", external="w.bin")
    before = onnx_digest(path)
    data.write_bytes(np.full((3, 2), 2, np.float32).tobytes())
    assert onnx_digest(path) != before


@pytest.fixture(scope="module")
def legacy_onnx(trained_tiny, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained tiny MobileNetV2 written by torch's legacy TorchScript exporter (its own
    node naming, a fixed batch of 1), not by the pipeline."""
    import torch
    from safetensors.torch import load_file

    from pipeline.models.registry import build

    model = build(trained_tiny["spec"])
    model.load_state_dict(load_file(str(trained_tiny["weights"])))
    path = tmp_path_factory.mktemp("legacy") / "digits_net.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (torch.zeros(1, 3, 64, 64),), str(path), dynamo=False,
                          opset_version=17, input_names=["image"], output_names=["logits"])
    assert not any(n.name.startswith("node_") for n in onnx.load(str(path)).graph.node)
    return path


def test_a_legacy_exported_model_runs_through_tflite_fp32_and_int8(legacy_onnx, trained_tiny,
                                                                  tmp_path: Path) -> None:
    outcome = execute(config_for(legacy_onnx, tmp_path, dataset="digits",
                                 calib=trained_tiny["calib"]))
    nodes = {n["name"]: n for n in outcome.report["nodes"]}
    assert set(nodes) == {"load_onnx", "onnx:int8", "tflite:fp32", "tflite:int8"}
    assert outcome.report["model"]["reference"] == REFERENCE_LABEL
    assert outcome.report["model"]["label"] == "digits_net_64"
    assert outcome.report["model"]["num_classes"] == 10 and \
        outcome.report["model"]["resolution"] == 64          # from the model itself
    for node in nodes.values():
        assert node["parity"]["reference"] == REFERENCE_LABEL
    assert nodes["load_onnx"]["parity"]["max_rel"] == 0
    assert nodes["tflite:fp32"]["parity"]["verdict"] == "pass"
    assert nodes["tflite:fp32"]["parity"]["max_rel"] <= 1e-4
    reference_accuracy = nodes["load_onnx"]["accuracy"]["value"]
    for name in ("onnx:int8", "tflite:int8"):   # judged on the labelled digits, as any node
        accuracy = nodes[name]["accuracy"]
        assert nodes[name]["status"] == "ran" and 0 <= accuracy["value"] <= 1
        assert accuracy["reference"] == reference_accuracy   # the ONNX model's own accuracy
    published = outcome.published
    assert "load_onnx" not in published and published["tflite:fp32"].suffix == ".tflite"
    assert outcome.exit_code == (0 if all(n["parity"]["verdict"] == "pass"
                                          for n in nodes.values()) else 1)


def test_external_data_is_read_into_one_self_contained_copy(tmp_path: Path) -> None:
    from pipeline.onnx_input import self_contained_copy

    (tmp_path / "w.bin").write_bytes(np.full((3, 2), 2, np.float32).tobytes())
    path = tiny_onnx(tmp_path / "m.onnx", external="w.bin")
    copy, model = self_contained_copy(path, tmp_path / "copy.onnx")
    loaded = onnx.load(str(copy), load_external_data=False)
    (weight,) = loaded.graph.initializer
    assert weight.data_location == TensorProto.DEFAULT
    np.testing.assert_array_equal(numpy_helper.to_array(weight), np.full((3, 2), 2, np.float32))
    assert len(model.graph.node) == 3


def test_a_dynamic_size_is_fixed_at_the_given_resolution(tmp_path: Path) -> None:
    path = tiny_onnx(tmp_path / "m.onnx", shape=["n", 3, "h", "w"])
    outcome = execute(config_for(path, tmp_path, resolution=16, precisions=["fp32"],
                                 mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25]))
    nodes = {n["name"]: n for n in outcome.report["nodes"]}
    assert outcome.report["model"]["resolution"] == 16
    assert nodes["tflite:fp32"]["parity"]["verdict"] == "pass", nodes["tflite:fp32"]["parity"]
    preprocessing = outcome.report["model"]["preprocessing"]
    assert (list(preprocessing["mean"]), list(preprocessing["std"])) == ([0.5] * 3, [0.25] * 3)


def test_the_copy_fixes_only_a_dynamic_height_and_width(tmp_path: Path) -> None:
    from pipeline.onnx_input import self_contained_copy

    dynamic = tiny_onnx(tmp_path / "d.onnx", shape=["n", 3, "h", "w"])
    copy, _ = self_contained_copy(dynamic, tmp_path / "copy.onnx", 16)
    dims = onnx.load(str(copy)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["n", 3, 16, 16]
    fixed = tiny_onnx(tmp_path / "f.onnx", shape=["n", 3, 8, 8])
    copy, _ = self_contained_copy(fixed, tmp_path / "same.onnx", 8)
    assert copy.read_bytes() == onnx.load(str(fixed)).SerializeToString(deterministic=True)
