"""Which node tests form the vision conformance suite, and how a case is frozen."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from pipeline.conformance.cases import FAST_CASES, VISION_OPS, Case, family, node_cases, vision_cases
from pipeline.conformance.expected import expected_failure
from pipeline.conformance.freeze import frozen_case


@pytest.fixture(scope="module")
def all_cases() -> list[Case]:
    return node_cases()


def test_selection_is_by_the_ops_inside_each_model(all_cases: list[Case]) -> None:
    chosen = vision_cases(all_cases)
    assert 250 <= len(chosen) <= 300
    assert all(set(c.ops) <= VISION_OPS and c.tensors_only for c in chosen)
    names = {c.name for c in chosen}
    # an expanded case qualifies on the ops it is spelled in, not on its name
    hard_sigmoid = [c for c in all_cases if c.name.startswith("test_hardsigmoid")]
    assert {c.name for c in hard_sigmoid if set(c.ops) <= VISION_OPS} <= names
    # a case named after a vision op but holding another op is left out
    outside = [c for c in all_cases if c.name.startswith("test_conv") and not set(c.ops) <= VISION_OPS]
    assert outside and not {c.name for c in outside} & names
    # sequence / optional I/O is not an image model's
    assert "test_identity_sequence" not in names and "test_identity_opt" not in names


def test_fast_subset_lies_in_the_suite(all_cases: list[Case]) -> None:
    names = {c.name for c in vision_cases(all_cases)}
    assert set(FAST_CASES) <= names and len(FAST_CASES) == len(set(FAST_CASES))


def test_family_is_the_op_the_case_is_about() -> None:
    case = Case("test_resize_upsample_scales_nearest", Path("."), ("Resize",), 1e-3, 1e-7)
    assert family(case) == "Resize"
    expanded = Case("test_hardsigmoid_expanded", Path("."), ("Add", "Clip", "Constant", "Mul"),
                    1e-3, 1e-7)
    assert family(expanded) == "Add"      # no HardSigmoid inside: the first op it holds
    assert family(Case("test_globalaveragepool", Path("."), ("GlobalAveragePool",), 1e-3, 1e-7)) \
        == "GlobalAveragePool"


def test_freezing_keeps_the_first_input_and_makes_the_rest_constants(
        all_cases: list[Case], tmp_path: Path) -> None:
    case = next(c for c in all_cases if c.name == "test_conv_with_strides_padding")
    frozen = frozen_case(case, tmp_path)
    model = onnx.load(frozen["model"])
    onnx.checker.check_model(model)
    assert [i.name for i in model.graph.input] == ["x"]
    assert "W" in {t.name for t in model.graph.initializer}
    assert np.load(frozen["inputs"][0]).shape == (1, 1, 7, 5)
    assert len(frozen["outputs"]) == 1 and frozen["rtol"] == case.rtol


def test_expected_failures_name_their_reason() -> None:
    assert "float8" in expected_failure("test_dequantizelinear_e4m3fn")
    assert "ROI" in expected_failure("test_resize_tf_crop_and_resize")
    assert expected_failure("test_resize_upsample_scales_cubic") is None   # rewritten, passes
    assert expected_failure("test_conv_with_strides_padding") is None
    assert expected_failure("test_resize_upsample_scales_nearest") is None
