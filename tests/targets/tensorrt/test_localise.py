"""TensorRT localisation: an engine is localised on an engine rebuilt from its source ONNX with
every tensor marked (a GPU), and says precisely why not where it cannot be."""
from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import UserInputError
from targets.tensorrt import TensorrtTarget
from targets.tensorrt.intermediates import MarkedEngineRunner

REASON = TensorrtTarget().unavailable_reason()
needs_gpu = pytest.mark.skipif(REASON is not None, reason=f"TensorRT cannot run here: {REASON}")
SETTINGS = {"flags": {"fp16": True, "int8": False, "tf32": False},
            "profile": {"input": "input", "min": [1, 3, 64, 64], "opt": [1, 3, 64, 64],
                        "max": [4, 3, 64, 64]}}


def test_the_marked_engine_is_built_from_the_nodes_source_onnx_and_settings(tmp_path) -> None:
    seen = []

    def source(digest: str) -> Path:
        seen.append(digest)
        return tmp_path / "model.onnx"

    runner = TensorrtTarget().intermediates_runner(
        tmp_path / "model_fp16.engine", 1, {"source_onnx": {"sha256": "ab" * 32},
                                            "settings": SETTINGS}, source)
    assert isinstance(runner, MarkedEngineRunner) and seen == ["ab" * 32]
    assert runner.onnx_path == tmp_path / "model.onnx" and runner.settings == SETTINGS


def test_an_engine_from_before_localisation_is_refused_with_the_fix(tmp_path) -> None:
    with pytest.raises(UserInputError, match="--force tensorrt"):
        TensorrtTarget().intermediates_runner(tmp_path / "model_fp16.engine", 1,
                                              {"settings": SETTINGS}, lambda digest: tmp_path)


def test_localise_names_why_an_engine_cannot_run_here(tmp_path) -> None:
    if REASON is None:
        pytest.skip("this machine has a GPU and TensorRT")
    from pipeline.localise.engine import localise_in_child

    with pytest.raises(UserInputError, match="cannot run model_fp16.engine here"):
        localise_in_child(str(tmp_path / "model_fp16.engine"), "p", "m", "r", "fp16", {}, {},
                          target="tensorrt")


def test_the_qdq_onnx_is_localised_on_onnx_runtime_not_as_an_engine(tiny_config) -> None:
    """tensorrt:qdq's artifact is an ONNX file checked on ONNX Runtime: it is localised and
    named there, on any machine (it used to be refused as an engine without a GPU)."""
    from pipeline.localise.command import localise_artifact
    from pipeline.localise.run_map import run_layer_map
    from pipeline.run import execute
    from targets.tensorrt.qdq import TensorrtQdqStage

    assert TensorrtTarget().runtime_target_for({"stage": TensorrtQdqStage.stage}).name == "onnx"
    assert isinstance(TensorrtTarget().runtime_target_for({"stage": "build_tensorrt"}),
                      TensorrtTarget)
    outcome = execute(tiny_config(targets=["tensorrt"], precisions=["int8"]))
    node = next(n for n in outcome.report["nodes"] if n["name"] == "tensorrt:qdq")
    record = localise_artifact(Path(node["artifact"]["path"]), outcome.out_dir,
                               node_name="tensorrt:qdq")
    assert record["runtime"].startswith("onnxruntime") and record["compared"] >= 40
    names = run_layer_map(outcome.report)["layers"]
    assert any(str(row["targets"].get("tensorrt:qdq")).endswith("_DequantizeLinear_Output")
               for row in names), "the Q/DQ ONNX is named as ONNX Runtime reads it"


@pytest.mark.gpu
@needs_gpu
def test_an_intact_engine_names_no_layer(tiny_config) -> None:  # pragma: no cover - GPU
    from pipeline.localise.command import localise_artifact
    from pipeline.run import execute

    outcome = execute(tiny_config(targets=["tensorrt"], precisions=["fp32"]))
    node = next(n for n in outcome.report["nodes"] if n["name"] == "tensorrt:fp32")
    record = localise_artifact(Path(node["artifact"]["path"]), outcome.out_dir)
    assert record["runtime"].startswith("tensorrt") and record["compared"] >= 40
    assert record["first_divergent"] is None
