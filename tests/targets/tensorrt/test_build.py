"""Engine build settings (checked everywhere) and the build itself (NVIDIA GPU + TensorRT only)."""
from __future__ import annotations

import pytest

from targets.tensorrt.build import build_settings


def test_settings_per_precision() -> None:
    fp32 = build_settings("fp32", "input", (3, 64, 64), 1, 8, 16, 1024, 3)
    assert fp32["flags"] == {"fp16": False, "int8": False, "tf32": False}
    assert fp32["profile"] == {"input": "input", "min": [1, 3, 64, 64], "opt": [8, 3, 64, 64],
                               "max": [16, 3, 64, 64]}
    int8 = build_settings("int8", "input", (3, 64, 64), 1, 1, 1, 1024, 3)
    assert int8["flags"] == {"fp16": True, "int8": True, "tf32": False}
    assert int8["quantization"].startswith("explicit")


def test_an_inconsistent_batch_range_is_refused() -> None:
    with pytest.raises(ValueError, match="min_batch <= opt_batch <= max_batch"):
        build_settings("fp16", "input", (3, 64, 64), 4, 2, 8, 1024, 3)


@pytest.mark.gpu
def test_an_fp16_engine_builds_with_a_timing_cache(trained_tiny_export, tmp_path) -> None:
    from targets.tensorrt import TensorrtTarget

    reason = TensorrtTarget().unavailable_reason()
    if reason:
        pytest.skip(f"needs an NVIDIA GPU and TensorRT >= 10: {reason}")
    from targets.tensorrt.build import build

    settings = build_settings("fp16", "input", (3, 64, 64), 1, 4, 8, 1024, 3)
    info = build(str(trained_tiny_export["onnx"]), str(tmp_path / "e.engine"), settings,
                 None, str(tmp_path / "timing.cache"))
    assert info["engine_bytes"] == (tmp_path / "e.engine").stat().st_size > 0
    assert (tmp_path / "timing.cache").stat().st_size > 0
    again = build(str(trained_tiny_export["onnx"]), str(tmp_path / "f.engine"), settings,
                  str(tmp_path / "timing.cache"), str(tmp_path / "timing2.cache"))
    assert again["timing_cache_reused"]
