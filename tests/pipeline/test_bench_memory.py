"""Per-runtime peak memory, each measured in a child process of its own (real runs, no mocks)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pipeline.bench_memory import peak_memory

FEATURES = 4096
SHAPE = [1, 1, 1, FEATURES]       # an NCHW input of 4096 values


def matmul_model(path: Path, outputs: int) -> Path:
    """``Y = X @ W`` with a seeded random float32 W of FEATURES x ``outputs``, saved to ``path``."""
    weight = np.random.default_rng(0).standard_normal((FEATURES, outputs)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "W"], ["output"])], "matmul",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, SHAPE)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1, 1, outputs])],
        [numpy_helper.from_array(weight, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bench_memory")
    return {"small": matmul_model(folder / "small.onnx", 8),              # 128 KiB of weights
            "large": matmul_model(folder / "large.onnx", FEATURES)}       # 64 MiB of weights


BALLAST_MB = 256


@pytest.fixture(scope="module")
def small(models: dict[str, Path]) -> dict:
    """The small model's record, measured while this (parent) process holds 256 MiB more."""
    ballast = np.ones(BALLAST_MB * 2**20, dtype=np.uint8)  # written, so resident
    record = peak_memory("file", {"path": str(models["small"]), "input_shape": SHAPE},
                         warmup=10, runs=50, timeout_s=120)
    del ballast
    return record


def test_onnx_file_is_measured_in_a_child_without_torch(small: dict) -> None:
    assert small["verdict"] == "measured", small
    assert small["runtime"] == "onnxruntime"
    assert small["peak_rss_mb"] >= small["baseline_rss_mb"] > 0
    assert small["inference_rss_mb"] >= 0
    difference = small["peak_rss_mb"] - small["baseline_rss_mb"]
    assert small["inference_rss_mb"] == pytest.approx(difference, abs=0.11)
    assert (small["warmup"], small["runs"], small["threads"], small["batch"]) == (10, 50, 1, 1)
    assert small["median_ms"] > 0 and small["load_s"] > 0
    assert "onnxruntime" in small["preloaded"]         # the baseline already holds the runtime
    assert small["imported_torch"] is False


def test_the_child_s_peak_is_its_own_not_its_parent_s(small: dict) -> None:
    # Linux carries the pre-exec high-water mark (this process's) into the child's ru_maxrss,
    # so pipeline.bench.peak_rss_mb reads VmHWM
    assert small["peak_rss_mb"] < BALLAST_MB, small


def test_a_larger_weight_shows_as_more_inference_memory(models: dict[str, Path],
                                                        small: dict) -> None:
    large = peak_memory("file", {"path": str(models["large"]), "input_shape": SHAPE},
                        warmup=10, runs=50, timeout_s=120)
    assert large["verdict"] == "measured", large
    # 64 MiB of weights must be resident while the session runs (at least once)
    assert large["inference_rss_mb"] - small["inference_rss_mb"] >= 40, (small, large)
    assert large["peak_rss_mb"] - small["peak_rss_mb"] >= 40


def test_a_missing_file_is_unverified_not_raised(tmp_path: Path) -> None:
    missing = tmp_path / "absent.onnx"
    record = peak_memory("file", {"path": str(missing), "input_shape": SHAPE}, timeout_s=60)
    assert record["verdict"] == "unverified" and record["peak_rss_mb"] is None
    assert "FileNotFoundError" in record["reason"] and str(missing) in record["reason"]
    assert "\n" not in record["reason"]


def test_a_corrupt_file_is_unverified_with_the_runtime_s_reason(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07this is not a protobuf model\xff\xfe" * 8)
    record = peak_memory("file", {"path": str(corrupt), "input_shape": SHAPE}, timeout_s=60)
    assert record["verdict"] == "unverified" and record["peak_rss_mb"] is None, record
    assert record["model"] == str(corrupt) and record["runs"] == 0
    assert "\n" not in record["reason"] and len(record["reason"]) <= 300
    assert "onnx" in record["reason"].lower(), record["reason"]


def test_torch_reference_model_is_measured() -> None:
    config = {"model": "mobilenet_v2", "width": 0.35, "resolution": 32, "num_classes": 10}
    record = peak_memory("torch", {"config": config}, warmup=10, runs=50, timeout_s=180)
    assert record["verdict"] == "measured", record
    assert record["runtime"] == "torch-eager" and record["model"] == "mobilenet_v2"
    assert record["input_shape"] == [1, 3, 32, 32]
    assert record["peak_rss_mb"] >= record["baseline_rss_mb"] > 0
    assert record["inference_rss_mb"] >= 0 and record["imported_torch"] is True
    assert (record["warmup"], record["runs"]) == (10, 50)


def test_an_unknown_kind_is_unverified() -> None:
    record = peak_memory("tensorflow", {}, timeout_s=60)
    assert record["verdict"] == "unverified" and "kind must be one of" in record["reason"]
