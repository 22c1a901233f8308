"""Parity metrics on hand-made arrays: pipeline.parity_metrics, without a verdict."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from pipeline.parity_metrics import (
    CONSTANT_REL,
    centred_cosine,
    compare_outputs,
    is_constant,
    reference_spread,
)


def logits(n: int = 8, c: int = 10, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, c)).astype(np.float32)


def test_centred_cosine_ignores_constant_offset() -> None:
    ref = logits()
    assert centred_cosine(ref.astype(np.float64), ref.astype(np.float64) + 100.0) == pytest.approx(1.0)
    m = compare_outputs({"y": ref}, {"y": ref + np.float32(3.0)})[0]
    assert m.cosine == pytest.approx(1.0, abs=1e-6)
    assert m.max_abs == pytest.approx(3.0, rel=1e-5)  # the offset is caught by max_rel instead


def test_constant_reference_guards_zero_range() -> None:
    ref = np.full((2, 4), 2.0, np.float32)
    m = compare_outputs({"y": ref}, {"y": ref.copy()})[0]
    assert m.max_rel == 0.0 and m.cosine == 1.0
    m = compare_outputs({"y": ref}, {"y": ref + np.float32(0.5)})[0]
    assert m.max_rel == pytest.approx(0.25)  # scale falls back to max |ref|
    zeros = np.zeros((2, 4), np.float32)
    assert compare_outputs({"y": zeros}, {"y": zeros + 1})[0].max_rel == float("inf")


# -- properties ------------------------------------------------------------------------------

# multiples of 1/8: exact in float32, and no subnormal spreads that an offset would round away
eighths = st.integers(-8000, 8000).map(lambda i: i / 8)


@settings(max_examples=60, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 6), st.integers(2, 12)), elements=eighths),
       st.floats(-100, 100, allow_nan=False))
def test_metric_properties(ref: np.ndarray, offset: float) -> None:
    same = compare_outputs({"y": ref}, {"y": ref.copy()})[0]
    assert same.max_abs == 0 and same.max_rel == 0 and same.mean_abs == 0
    assert same.top1_agreement == 1.0 and same.top5_agreement == 1.0
    assert same.cosine == pytest.approx(1.0)
    shifted = ref.astype(np.float64) + offset
    m = compare_outputs({"y": ref.astype(np.float64)}, {"y": shifted})[0]
    assert -1.0 <= m.cosine <= 1.0
    assert m.cosine == pytest.approx(1.0, abs=1e-6)
    assert m.max_abs == pytest.approx(abs(offset), rel=1e-6, abs=1e-9)
    assert m.mean_abs <= m.max_abs + 1e-12
    swapped = compare_outputs({"y": shifted}, {"y": ref.astype(np.float64)})[0]
    assert swapped.max_abs == pytest.approx(m.max_abs)


def test_a_constant_sample_shifted_by_an_offset_counts_as_identical() -> None:
    """Centring 85.44 + 0 leaves float rounding residue; it must not read as a 0.0 cosine
    (found by hypothesis in test_metric_properties)."""
    ref = np.zeros((1, 3))
    assert centred_cosine(ref, ref + 85.4376320894277) == 1.0
    assert centred_cosine(ref, np.array([[0.0, 1.0, 2.0]])) == 0.0


def test_reference_spread_is_measured_against_the_first_sample_in_float64() -> None:
    ref = np.array([[1.0, 2.0], [1.0, 2.5], [0.0, 2.0]], np.float32)
    assert reference_spread(ref) == (1.0, 2.5)
    assert reference_spread(ref[:1]) is None  # one sample: no variation to measure
    assert reference_spread(np.zeros((3, 0))) is None
    big = np.full((2, 3), 3e38, np.float32)  # float32 would overflow subtracting -3e38
    big[1] = -3e38
    assert reference_spread(big)[0] == pytest.approx(6e38)


def test_is_constant_is_relative_with_a_floor_for_all_zeros() -> None:
    assert is_constant(0.0, 0.0) and is_constant(0.0, 5.0)
    assert is_constant(CONSTANT_REL * 100, 100.0) and not is_constant(2 * CONSTANT_REL * 100, 100.0)
    assert not is_constant(1e-30, 1e-30)  # a tiny but varying output is not constant
    assert is_constant(1e-40, 1e-40)      # below float32's smallest normal: rounding residue


def test_missing_and_extra_outputs_have_no_reference_spread() -> None:
    a = logits()
    metrics = compare_outputs({"a": a, "b": a}, {"a": a, "c": a, "d": a})
    assert [(m.matched_by, m.ref_constant) for m in metrics] == \
        [("name", False), ("missing", None), ("extra", None), ("extra", None)]


@settings(max_examples=60, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(2, 6), st.integers(1, 12)), elements=eighths))
def test_ref_constant_is_exactly_all_samples_equal(ref: np.ndarray) -> None:
    """On multiples of 1/8 up to 1000, any real difference is >= 1/8 > 1e-6 of the magnitude."""
    m = compare_outputs({"y": ref}, {"y": ref})[0]
    assert m.ref_constant == bool((ref == ref[0]).all())
    assert m.to_json()["ref_constant"] is m.ref_constant
