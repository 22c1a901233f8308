"""fp16's top-1 gate leaves out near-ties: inputs on which the reference's top-1 leads its
runner-up by less than ``top1_tie`` of the output range, which rounding alone can swap."""
from __future__ import annotations

import numpy as np

from pipeline.parity import Tolerance, compare_outputs, judge, tolerance_for


def _logits(n: int = 20, seed: int = 0) -> np.ndarray:
    """(n, 10) logits whose top-1 leads by at least 10 % of the range, except sample 0, whose
    two best classes differ by 1e-4 of the range."""
    rng = np.random.default_rng(seed)
    logits = rng.uniform(-1, 1, (n, 10)).astype(np.float32)
    logits[:, 3] = 3.0                      # a clear winner on every sample...
    logits[0, 3], logits[0, 7] = 2.0, 2.0 - 1e-4 * 4.0   # ...but sample 0: a near-tie
    return logits


def _swap(logits: np.ndarray, sample: int, a: int, b: int) -> np.ndarray:
    out = logits.copy()
    out[sample, [a, b]] = out[sample, [b, a]]
    return out


def test_a_swapped_near_tie_does_not_fail_fp16_and_is_named() -> None:
    ref = _logits()
    cand = _swap(ref, 0, 3, 7)              # rounding-sized change, top-1 flips
    result = judge(compare_outputs({"y": ref}, {"y": cand}), tolerance_for("fp16"), len(ref))
    assert result.verdict == "pass", result.failures
    assert result.to_json()["top1_agreement"] == 0.95          # the raw figure is still shown
    assert any("judged on 19 of 20 inputs; 1 near-tie" in note for note in result.notes)


def test_a_flip_on_a_decided_input_still_fails_fp16() -> None:
    ref = _logits()
    cand = ref.copy()
    cand[5, 3] = -1.0                       # sample 5's clear winner loses
    result = judge(compare_outputs({"y": ref}, {"y": cand}), Tolerance(min_top1=0.99,
                                                                       top1_tie=0.005), len(ref))
    assert result.verdict == "fail"
    assert any("1 of 19 samples disagree" in f for f in result.failures)


def test_without_a_tie_allowance_a_swapped_near_tie_fails() -> None:
    ref = _logits()
    cand = _swap(ref, 0, 3, 7)
    result = judge(compare_outputs({"y": ref}, {"y": cand}), Tolerance(min_top1=1.0), len(ref))
    assert result.verdict == "fail" and any("1 of 20 samples disagree" in f
                                            for f in result.failures)
    assert tolerance_for("fp32").top1_tie is None and tolerance_for("int8").top1_tie is None


def test_when_every_input_is_a_near_tie_top1_is_not_judged() -> None:
    ref = np.tile(np.array([[1.0, 1.0 - 1e-5, -1.0]], np.float32), (4, 1))
    ref[:, 2] += np.arange(4)[:] * 0.1      # the inputs differ (not a constant reference)
    cand = ref[:, [1, 0, 2]]
    result = judge(compare_outputs({"y": ref}, {"y": cand}),
                   Tolerance(min_top1=1.0, top1_tie=0.01), len(ref))
    assert result.verdict == "fail"         # no limit could be checked: never a silent pass
    assert any("4 near-tie(s)" in note for note in result.notes)


def test_cache_keys_of_tolerances_without_a_tie_are_unchanged() -> None:
    """top1_tie joins a stage's cache key only when set: fp32/int8 entries stay valid."""
    before = {"max_rel", "min_cosine", "min_top1", "min_top5", "in_distribution_only"}
    assert set(tolerance_for("fp32").cache_identity()) == before
    assert set(tolerance_for("int8").cache_identity()) == before
    assert tolerance_for("fp16").cache_identity()["top1_tie"] == 0.005
