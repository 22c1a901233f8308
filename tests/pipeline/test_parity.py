"""Parity metrics and verdicts on hand-made arrays."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from pydantic import ValidationError

from pipeline.data import ParityInputs
from pipeline.parity import (
    DEFAULT_TOLERANCES,
    ParityResult,
    Tolerance,
    centred_cosine,
    check_parity,
    compare_outputs,
    judge,
    run_outputs,
    tolerance_for,
    unverified,
)
from targets.base import Runner

FP32 = DEFAULT_TOLERANCES["fp32"]


def logits(n: int = 8, c: int = 10, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, c)).astype(np.float32)


def check(ref: dict, cand: dict, tol: Tolerance = FP32, n: int | None = None) -> ParityResult:
    metrics = compare_outputs(ref, cand)
    n_inputs = n if n is not None else next(iter(ref.values())).shape[0]
    return judge(metrics, tol, n_inputs)


# -- tolerances ------------------------------------------------------------------------------


def test_defaults_per_precision() -> None:
    assert FP32 == Tolerance(max_rel=1e-4, min_cosine=0.99999, min_top1=1.0)
    assert DEFAULT_TOLERANCES["fp16"].max_rel is None
    assert DEFAULT_TOLERANCES["int8"].min_top1 == 0.95


def test_tolerance_rejects_unknown_fields_and_bad_values() -> None:
    with pytest.raises(ValidationError):
        Tolerance(max_rell=1e-3)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        Tolerance(min_top1=1.5)
    with pytest.raises(ValidationError):
        Tolerance(max_rel=float("nan"))


def test_tolerance_for_merges_only_fields_set() -> None:
    tol = tolerance_for("int8", {"int8": Tolerance(min_cosine=0.98)})
    assert tol.min_cosine == 0.98 and tol.min_top1 == 0.95
    tol = tolerance_for("int8", {"int8": Tolerance(min_top1=None)})
    assert tol.min_top1 is None and tol.min_cosine == 0.99
    assert tolerance_for("fp16") == DEFAULT_TOLERANCES["fp16"]
    assert tolerance_for("bf16", {"bf16": Tolerance(min_cosine=0.9)}).min_cosine == 0.9
    with pytest.raises(ValueError, match="bf16"):
        tolerance_for("bf16")


# -- verdicts --------------------------------------------------------------------------------


def test_identical_outputs_pass() -> None:
    ref = {"logits": logits()}
    result = check(ref, {"logits": ref["logits"].copy()})
    assert result and result.verdict == "pass"
    assert result.failures == []
    m = result.metrics[0]
    assert m.max_abs == 0 and m.max_rel == 0 and m.cosine == pytest.approx(1.0)
    assert m.top1_agreement == 1.0 and m.top5_agreement == 1.0
    assert m.snr_db == float("inf")
    assert "within tolerance" in result.reason


def test_perturbed_candidate_fails_naming_max_rel() -> None:
    ref = logits()
    cand = ref.copy()
    cand[3, 2] += 0.01 * (ref.max() - ref.min())  # 1% of the range, top-1 untouched
    result = check({"logits": ref}, {"logits": cand})
    assert not result and result.verdict == "fail"
    assert any("max_rel" in f and "limit 0.0001" in f for f in result.failures)
    assert result.metrics[0].max_rel == pytest.approx(0.01, rel=1e-3)


def test_every_failure_is_collected() -> None:
    ref = logits(n=20)
    cand = ref.copy()
    cand[0] = -cand[0]  # flips sample 0's top-1 and wrecks its cosine
    result = check({"logits": ref}, {"logits": cand})
    joined = "\n".join(result.failures)
    assert "max_rel" in joined and "cosine" in joined and "top1_agreement" in joined
    assert len(result.failures) == 3
    assert "(+2 more)" in result.reason


def test_needed_tolerance_is_reported() -> None:
    ref = logits()
    cand = ref + np.float32(1e-3)
    cand[1, 4] += 0.05
    result = check({"logits": ref}, {"logits": cand})
    assert not result
    m = result.metrics[0]
    assert result.needed["max_rel"] == m.max_rel
    assert result.needed["min_cosine"] == m.cosine
    assert result.needed["min_top1"] == m.top1_agreement
    looser = Tolerance(
        max_rel=result.needed["max_rel"],
        min_cosine=result.needed["min_cosine"],
        min_top1=result.needed["min_top1"],
    )
    assert judge(result.metrics, looser, result.n_inputs)


def test_nan_in_candidate_fails() -> None:
    ref = logits()
    cand = ref.copy()
    cand[2, 2] = np.nan
    result = check({"logits": ref}, {"logits": cand})
    assert not result
    assert any("candidate has 1 NaN/Inf" in f for f in result.failures)
    assert result.metrics[0].nonfinite_cand == 1 and result.metrics[0].max_abs is None


def test_inf_in_reference_fails() -> None:
    ref = logits()
    ref[0, 0] = np.inf
    result = check({"logits": ref}, {"logits": logits()})
    assert not result
    assert any("reference has 1 NaN/Inf" in f for f in result.failures)


def test_zero_outputs_fails() -> None:
    result = judge(compare_outputs({}, {}), FP32, n_inputs=4)
    assert not result and "no outputs were compared" in result.failures


def test_zero_inputs_fails() -> None:
    empty = np.zeros((0, 10), np.float32)
    result = check({"y": empty}, {"y": empty}, n=0)
    assert not result
    assert any("no inputs" in f for f in result.failures)


def test_shape_mismatch_fails() -> None:
    ref = logits()
    result = check({"y": ref}, {"y": ref[:, None, :]})
    assert not result
    assert result.metrics[0].shape_mismatch
    assert any("shape [8, 1, 10] != reference shape [8, 10]" in f for f in result.failures)


def test_sample_count_must_match_inputs() -> None:
    ref = logits()
    result = check({"y": ref}, {"y": ref.copy()}, n=9)
    assert not result and any("8 samples but 9 inputs" in f for f in result.failures)


def test_match_by_position_when_names_differ() -> None:
    ref = logits()
    result = check({"logits": ref}, {"output_0": ref.copy()})
    assert result
    assert result.metrics[0].matched_by == "position"
    assert result.metrics[0].cand_name == "output_0"
    assert any("matched by position" in n for n in result.notes)


def test_missing_output_fails_and_extra_is_noted() -> None:
    a, b = logits(seed=1), logits(seed=2)
    result = check({"a": a, "b": b}, {"a": a.copy(), "c": b, "d": b})
    assert not result
    assert any("'b': missing" in f for f in result.failures)
    assert sum("no reference counterpart" in n for n in result.notes) == 2


def test_top1_and_top5_agreement_on_constructed_example() -> None:
    ref = np.zeros((4, 6), np.float32)
    ref[np.arange(4), [0, 1, 2, 3]] = 1.0  # reference argmax = sample index
    cand = ref.copy()
    cand[1] = [0, 0.9, 0, 0, 0, 2.0]  # argmax 5: flip, but class 1 still 2nd -> in top-5
    cand[3] = [9, 8, 7, 6, 5, 4]  # class 3 ranked 4th: flip, still in top-5
    metrics = compare_outputs({"p": ref}, {"p": cand})
    assert metrics[0].top1_agreement == 0.5
    assert metrics[0].top5_agreement == 1.0
    cand[2] = [5, 4, 3, 2, 1, 0] + np.zeros(6, np.float32)  # class 2 3rd of 6 -> top-5 yes
    cand[0] = [-1, 5, 4, 3, 2, 1]  # class 0 ranked last (6th) -> out of top-5
    metrics = compare_outputs({"p": ref}, {"p": cand})
    assert metrics[0].top1_agreement == 0.0
    assert metrics[0].top5_agreement == 0.75
    result = judge(metrics, Tolerance(min_top1=0.9), 4)
    assert any("4 of 4 samples disagree" in f for f in result.failures)


def test_topk_undefined_for_non_classifier_outputs() -> None:
    feat = np.random.default_rng(0).standard_normal((3, 4, 5, 5))
    m = compare_outputs({"f": feat}, {"f": feat})[0]
    assert m.top1_agreement is None and m.top5_agreement is None
    result = judge([m], DEFAULT_TOLERANCES["int8"], 3)
    assert result  # cosine checked; top-1 not applicable is a note, not a failure
    assert any("min_top1 not checked" in n for n in result.notes)


def test_nothing_checkable_fails() -> None:
    scalar = np.arange(5, dtype=np.float32)[:, None]  # (N, 1): no cosine, no top-k
    result = check({"s": scalar}, {"s": scalar}, tol=Tolerance(min_cosine=0.9))
    assert not result and "no tolerance limit could be checked" in result.failures[0]
    assert not check({"y": logits()}, {"y": logits()}, tol=Tolerance())


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


def test_to_json_is_strict_json_and_has_summary_keys() -> None:
    ref = {"a": logits(seed=1), "b": logits(seed=2)}
    cand = {"a": ref["a"].copy(), "b": ref["b"] * np.float32(1.01)}
    out = check(ref, cand).to_json()
    for key in ("verdict", "reason", "max_abs", "max_rel", "mean_abs", "cosine", "top1_agreement",
                "top5_agreement", "n_inputs", "outputs", "failures"):
        assert key in out
    assert out["max_abs"] == max(o["max_abs"] for o in out["outputs"])
    assert out["cosine"] == min(o["cosine"] for o in out["outputs"])
    assert out["outputs"][0]["snr_db"] is None  # inf for identical outputs -> None
    json.dumps(out, allow_nan=False)


def test_unverified_is_falsy() -> None:
    result = unverified("Core ML prediction needs macOS")
    assert not result and result.verdict == "unverified"
    assert str(result) == "unverified: Core ML prediction needs macOS"
    assert result.to_json()["max_abs"] is None


# -- running ---------------------------------------------------------------------------------


class LinearRunner(Runner):
    """y = mean over H,W of x @ W; records the batch sizes it saw."""

    runtime = "numpy"

    def __init__(self, weight: np.ndarray, noise: float = 0.0) -> None:
        super().__init__()
        self.weight, self.noise, self.batches = weight, noise, []

    def activate_impl(self) -> None:
        pass

    def input_names_impl(self) -> list[str]:
        return ["image"]

    def infer_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = feeds["image"]
        self.batches.append(x.shape[0])
        y = x.mean(axis=(2, 3)) @ self.weight
        x[...] = 0  # a misbehaving runtime that scribbles on its input
        return {"logits": y + self.noise}


def tiny_inputs(n: int = 5) -> ParityInputs:
    batch = np.random.default_rng(0).standard_normal((n, 3, 4, 4)).astype(np.float32)
    return ParityInputs(names=[f"r{i}" for i in range(n)], kinds=["random"] * n, batch=batch)


def test_run_outputs_feeds_batch_one_and_stacks() -> None:
    inputs = tiny_inputs()
    before = inputs.digest()
    runner = LinearRunner(np.eye(3, 7, dtype=np.float32))
    out = run_outputs(runner, inputs)
    assert out["logits"].shape == (5, 7) and runner.batches == [1] * 5
    assert not runner.is_active  # entered and left by run_outputs
    assert inputs.digest() == before  # the runner got copies
    runner.batches.clear()
    with runner:
        out2 = run_outputs(runner, inputs, batch_size=2)
        assert runner.is_active
    assert runner.batches == [2, 2, 1]
    np.testing.assert_allclose(out["logits"], out2["logits"], rtol=1e-6)


def test_run_outputs_rejects_dropped_batch_dim() -> None:
    class Squeezing(LinearRunner):
        def infer_impl(self, feeds):  # type: ignore[no-untyped-def]
            return {"logits": super().infer_impl(feeds)["logits"][0]}

    with pytest.raises(ValueError, match="batch dimension"):
        run_outputs(Squeezing(np.eye(3, 4, dtype=np.float32)), tiny_inputs(2))


def test_check_parity_with_runner_or_outputs() -> None:
    inputs = tiny_inputs()
    w = np.random.default_rng(1).standard_normal((3, 10)).astype(np.float32)
    ref = LinearRunner(w)
    assert check_parity(ref, LinearRunner(w), inputs, FP32)
    ref_out = run_outputs(ref, inputs)
    bad = check_parity(ref_out, LinearRunner(w, noise=0.5), inputs, FP32)
    assert not bad and any("max_rel" in f for f in bad.failures)


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
    from pipeline.parity import centred_cosine

    ref = np.zeros((1, 3))
    assert centred_cosine(ref, ref + 85.4376320894277) == 1.0
    assert centred_cosine(ref, np.array([[0.0, 1.0, 2.0]])) == 0.0
