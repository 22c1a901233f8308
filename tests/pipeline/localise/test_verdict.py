"""pipeline.localise.verdict: metrics per layer, the first divergent layer (the cause, not the
layers that inherit its error), fused groups named after their weighted op, tolerances."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.localise.layer_map import Layer, LayerMap
from pipeline.localise.tolerance import LayerTolerance, layer_tolerance_for
from pipeline.localise.verdict import (compare_layers, first_divergent, layer_metrics,
                                       localisation_record, transient)

RNG = np.random.default_rng(0)
#: a chain conv -> relu -> conv -> relu, then an add of both relus (a residual)
LAYERS = LayerMap(["input"], [
    Layer("c1", "n1", "Conv", "block.0", "conv2d", ["input"]),
    Layer("r1", "n2", "Relu", "block.1", "relu", ["c1"]),
    Layer("c2", "n3", "Conv", "block.2", "conv2d_1", ["r1"]),
    Layer("r2", "n4", "Relu", "block.3", "relu_1", ["c2"]),
    Layer("sum", "n5", "Add", "block", "add", ["r1", "r2"]),
])
REFERENCE = {layer.fx_node: RNG.normal(size=(3, 4, 5, 5)).astype(np.float32)
             for layer in LAYERS.layers}


def _target(broken: dict[str, float] | None = None, missing: tuple[str, ...] = ()) -> dict:
    """Each layer's reference value, with noise of the given size added where named (its own
    seeded generator: the noise does not depend on which tests ran before)."""
    rng = np.random.default_rng(1)
    out = {}
    for layer in LAYERS.layers:
        if layer.tensor in missing:
            continue
        value = REFERENCE[layer.fx_node].copy()
        for name, size in (broken or {}).items():
            if LAYERS.layers.index(layer) >= [x.tensor for x in LAYERS.layers].index(name):
                value = value + rng.normal(scale=size, size=value.shape).astype(np.float32)
        out[layer.tensor] = (f"t_{layer.tensor}", value)
    return out


def test_metrics_are_relative_to_the_reference_range_and_centred() -> None:
    ref = np.stack([np.linspace(0, 10, 50), np.linspace(-5, 5, 50)]).astype(np.float32)
    assert layer_metrics(ref, ref) == (0.0, 1.0)
    max_rel, cosine = layer_metrics(ref, ref + 100.0)    # a constant offset: centred away
    assert max_rel == pytest.approx(100 / 15) and cosine == pytest.approx(1.0)
    assert layer_metrics(ref, -ref)[1] == pytest.approx(-1.0)
    assert layer_metrics(ref, np.full_like(ref, np.nan)) == (float("inf"), -1.0)


def test_the_cause_is_named_not_the_layers_that_inherit_its_error() -> None:
    tol = LayerTolerance(max_rel=1e-3)
    errors, skipped = compare_layers(LAYERS, REFERENCE, _target({"c2": 0.5}), tol)
    assert [e.within for e in errors] == [True, True, False, False, False] and not skipped
    first = first_divergent(errors)
    assert first.torch_module == "block.2" and first.onnx_tensor == "c2"
    assert first.target_tensor == "t_c2" and first.inputs == ["r1"]
    record = localisation_record(errors, skipped, tol, "fp32")
    assert record["first_divergent"]["torch_module"] == "block.2"
    assert record["top"][0]["torch_module"] == "block.2"
    assert [row["torch_module"] for row in record["curve"]] == [
        "block.0", "block.1", "block.2", "block.3", "block"]


def test_an_error_the_next_layers_absorb_is_transient_not_the_cause() -> None:
    """Only c2 is off (a squeeze-excite squeeze the gate after it absorbs): r2 and the sum are
    back within the tolerance, so nothing is named and c2 is listed as transient."""
    tol = LayerTolerance(max_rel=1e-3)
    target = _target()
    name, value = target["c2"]
    noise = np.random.default_rng(2).normal(scale=0.5, size=value.shape)
    target["c2"] = (name, value + noise.astype(np.float32))
    errors, skipped = compare_layers(LAYERS, REFERENCE, target, tol)
    assert [e.within for e in errors] == [True, True, False, True, True]
    assert first_divergent(errors) is None
    record = localisation_record(errors, skipped, tol, "int8")
    assert record["first_divergent"] is None
    assert [e["torch_module"] for e in record["transient"]] == ["block.2"]
    assert record["transient"][0]["limit"] == tol.model_dump()


def _off_by(shares: dict[str, float]) -> dict:
    """Each layer's reference value with one element moved by ``share`` of its range."""
    out = {}
    for layer in LAYERS.layers:
        value = REFERENCE[layer.fx_node].copy()
        span = float(value.max() - value.min())
        value.flat[0] += shares.get(layer.tensor, 0.0) * span
        out[layer.tensor] = (f"t_{layer.tensor}", value)
    return out


def test_a_fault_whose_drift_crosses_the_limit_late_is_named_at_its_own_layer() -> None:
    """c2 is broken; r2 keeps 0.7 of the limit (within, but far over what c2's input had);
    the sum goes over: the sum is not the cause (its inputs only look within), c2 is."""
    tol = LayerTolerance(max_rel=1e-3)
    errors, _ = compare_layers(LAYERS, REFERENCE, _off_by({"c2": 0.1, "r2": 7e-4,
                                                            "sum": 2e-3}), tol)
    assert [e.within for e in errors] == [True, True, False, True, False]
    assert first_divergent(errors).torch_module == "block.2" and not transient(errors)


def test_an_error_that_falls_back_to_its_inputs_level_was_absorbed() -> None:
    """c2's input r1 is at 0.4 of the limit and r2 falls back to 0.5 (< 2 x 0.4): c2 was
    absorbed (transient) and the sum, over the limit on its own, is the cause; with the sum
    within too, nothing is."""
    tol = LayerTolerance(max_rel=1e-3)
    errors, _ = compare_layers(LAYERS, REFERENCE, _off_by({"r1": 4e-4, "c2": 0.1,
                                                            "r2": 5e-4, "sum": 2e-3}), tol)
    assert first_divergent(errors).torch_module == "block"
    assert [e.torch_module for e in transient(errors)] == ["block.2"]
    errors, _ = compare_layers(LAYERS, REFERENCE, _off_by({"c2": 0.1, "r2": 7e-4,
                                                            "sum": 7e-4}), tol)
    assert first_divergent(errors) is None
    assert [e.torch_module for e in transient(errors)] == ["block.2"]


def test_an_intact_target_names_nothing() -> None:
    errors, skipped = compare_layers(LAYERS, REFERENCE, _target(), layer_tolerance_for("fp32"))
    assert first_divergent(errors) is None and len(errors) == 5


def test_a_fused_kernel_is_named_after_its_weighted_op() -> None:
    """A target that computes conv+relu in one kernel has no tensor for the conv: the relu's
    tensor carries both, and a fault in it is named after the conv."""
    errors, skipped = compare_layers(LAYERS, REFERENCE, _target({"c2": 0.5}, missing=("c2",)),
                                     LayerTolerance(max_rel=1e-3))
    first = first_divergent(errors)
    assert first.torch_module == "block.2" and first.onnx_tensor == "r2"
    assert first.fused_with == ["block.3"]
    assert [s["onnx_tensor"] for s in skipped] == ["c2"]
    assert "fused" in skipped[0]["reason"]


def test_shapes_that_differ_are_not_compared() -> None:
    target = _target()
    target["r1"] = ("t_r1", np.zeros((3, 2)))
    errors, skipped = compare_layers(LAYERS, REFERENCE, target, LayerTolerance(max_rel=1e-3))
    assert [s["onnx_tensor"] for s in skipped] == ["r1"] and "shapes differ" in skipped[0]["reason"]
    assert next(e for e in errors if e.onnx_tensor == "c2").inputs == ["c1"]


def test_int8_noise_is_not_a_fault_but_a_collapse_is() -> None:
    int8 = layer_tolerance_for("int8")
    noisy, _ = compare_layers(LAYERS, REFERENCE, _target({"c1": 0.2}), int8)
    assert first_divergent(noisy) is None
    broken, _ = compare_layers(LAYERS, REFERENCE, _target({"c2": 5.0}), int8)
    assert first_divergent(broken).torch_module == "block.2"


def test_a_configured_layer_tolerance_overrides_only_what_it_sets() -> None:
    tol = layer_tolerance_for("fp32", {"fp32": LayerTolerance(max_rel=0.5)})
    assert tol.max_rel == 0.5 and tol.min_cosine == layer_tolerance_for("fp32").min_cosine
    with pytest.raises(ValueError):
        LayerTolerance(min_cosine=2)
