"""ONNX int8 (QDQ) on a trained tiny model: gates on digits, and a clear failure on random weights."""
from __future__ import annotations

from pipeline.run import execute


def test_int8_of_a_trained_model_is_built_and_judged(trained_tiny, tiny_config) -> None:
    """QDQ int8 from the digits calibration split, judged by its gates on the in-distribution
    inputs and by accuracy on the held-out split. Whether post-training int8 of this tiny
    network meets the gates is a figure for the issue note, not an assumption of the test."""
    assert trained_tiny["accuracy"] > 0.8, "fixture model did not train"
    outcome = execute(tiny_config(weights=trained_tiny["weights"], dataset="digits",
                                  precisions=["fp32", "int8"]))
    nodes = {n["name"]: n for n in outcome.report["nodes"]}
    int8 = nodes["onnx:int8"]
    parity = int8["parity"]
    assert int8["precision"] == "int8" and int8["target"] == "onnx"
    assert int8["accuracy"]["n"] == 360 and int8["accuracy"]["value"] > 0.5
    gates = (parity["cosine"] >= 0.99 and parity["top1_agreement"] >= 0.95
             and int8["accuracy"]["delta"] >= -0.01)
    assert (parity["verdict"] == "pass") == gates, parity
    assert "in-distribution" in parity["reason"] or parity["verdict"] == "fail"
    assert int8["info"]["ops"]["QuantizeLinear"] > 0 and int8["info"]["activations"] == "uint8"
    assert int8["info"]["calibration_source"] == "scikit-learn digits, calibration split"
    # published only when its gate passed: nothing that failed leaves the cache
    assert int8["artifact"]["path"].endswith("model_int8.onnx") == (parity["verdict"] == "pass")
    assert nodes["export_onnx"]["accuracy"]["delta"] == 0.0
    assert nodes["export_onnx"]["parity"]["verdict"] == "pass"
    assert outcome.exit_code == (0 if gates else 1)


def test_fewer_calibration_images_than_requested_is_a_warning(trained_tiny, tiny_config) -> None:
    outcome = execute(tiny_config(weights=trained_tiny["weights"], calib=trained_tiny["calib"],
                                  precisions=["int8"], calib_images=500))
    int8 = next(n for n in outcome.report["nodes"] if n["name"] == "onnx:int8")
    assert any("fewer than the 500 requested" in w for w in int8["warnings"])
