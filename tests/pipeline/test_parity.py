"""Parity verdicts on hand-made arrays (the metrics alone: test_parity_metrics.py)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import ValidationError

from pipeline.data import ParityInputs
from pipeline.parity import (
    DEFAULT_TOLERANCES,
    ParityResult,
    Tolerance,
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


def test_metrics_are_re_exported_from_parity() -> None:
    """Callers import the metrics from pipeline.parity; they live in pipeline.parity_metrics."""
    import pipeline.parity as parity
    import pipeline.parity_metrics as metrics

    for name in ("OutputMetrics", "compare_outputs", "centred_cosine", "centred_cosines",
                 "topk_agreement"):
        assert getattr(parity, name) is getattr(metrics, name)


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


# -- a reference without variation across inputs --------------------------------------------


def test_all_zero_reference_fails_even_against_itself() -> None:
    zeros = np.zeros((14, 10), np.float32)
    result = check({"logits": zeros}, {"logits": zeros.copy()})
    assert not result and result.verdict == "fail"
    assert result.failures == [
        "reference output 'logits' is the same for every input (max spread 0 over 14 inputs, "
        "largest |value| 0): the check cannot tell a working artifact from a constant one; "
        "check the model and its weights"]
    assert result.reason == result.failures[0]
    assert result.metrics[0].ref_constant is True
    out = result.to_json()
    json.dumps(out, allow_nan=False)
    assert out["verdict"] == "fail" and out["failures"] == result.failures
    assert out["outputs"][0]["ref_constant"] is True and out["outputs"][0]["ref_spread"] == 0.0


@pytest.mark.parametrize("tol", [FP32, DEFAULT_TOLERANCES["fp16"], DEFAULT_TOLERANCES["int8"]])
def test_constant_nonzero_reference_fails_at_every_precision(tol: Tolerance) -> None:
    row = logits(n=1, c=10)[0] * np.float32(50)
    ref = np.tile(row, (6, 1))
    result = check({"logits": ref}, {"logits": ref.copy()}, tol=tol)
    assert not result
    assert any("'logits' is the same for every input (max spread 0 over 6 inputs" in f
               for f in result.failures)


def test_reference_varying_only_by_rounding_noise_counts_as_constant() -> None:
    ref = np.full((5, 8), 1000.0)
    ref[2, 3] += 1e-4  # 1e-7 of the magnitude: below float32 resolution at 1000
    assert not check({"y": ref}, {"y": ref.copy()})
    ref[2, 3] += 1e-2  # 1e-5 of the magnitude: real variation
    assert check({"y": ref}, {"y": ref.copy()})


def test_a_constant_output_fails_next_to_a_varying_one() -> None:
    varying, constant = logits(seed=3), np.full((8, 4), -2.5, np.float32)
    ref = {"logits": varying, "aux": constant}
    result = check(ref, {k: v.copy() for k, v in ref.items()})
    assert not result and len(result.failures) == 1
    assert result.failures[0].startswith("reference output 'aux' is the same for every input")
    assert [m.ref_constant for m in result.metrics] == [False, True]


def test_varying_reference_still_passes_and_records_its_spread() -> None:
    ref = logits(n=2)
    result = check({"logits": ref}, {"logits": ref.copy()})
    assert result and not any("same for every input" in f for f in result.failures)
    m = result.metrics[0]
    assert m.ref_constant is False
    assert m.ref_spread == pytest.approx(float(np.abs(ref[1].astype(np.float64) - ref[0]).max()))
    assert m.ref_scale == pytest.approx(float(np.abs(ref).max()))


def test_constant_reference_is_reported_with_the_candidate_broken_too() -> None:
    zeros = np.zeros((4, 10), np.float32)
    result = check({"y": zeros}, {"y": zeros[:, None, :]})  # wrong shape: values not compared
    assert any("shape" in f for f in result.failures)
    assert any("same for every input" in f for f in result.failures)


def test_one_input_skips_the_variation_check_with_a_note() -> None:
    """With one input there is no variation to measure: the check passes on its other gates
    and says, in a note, that a constant model could not be told apart."""
    zeros = np.zeros((1, 10), np.float32)
    result = check({"logits": zeros}, {"logits": zeros.copy()})
    assert result and result.metrics[0].ref_constant is None
    assert any("reference variation not checked: 1 input" in n for n in result.notes)
    assert not any("variation not checked" in n for n in check({"y": logits()}, {"y": logits()}).notes)


def test_nonfinite_reference_is_not_also_called_constant() -> None:
    ref = np.full((3, 4), np.nan, np.float32)
    result = check({"y": ref}, {"y": ref.copy()})
    assert result.metrics[0].ref_constant is None
    assert not any("same for every input" in f for f in result.failures)
    assert any("reference has 12 NaN/Inf" in f for f in result.failures)


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
