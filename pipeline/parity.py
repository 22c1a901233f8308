"""Parity: a verdict on a candidate's outputs against a reference's, under a tolerance.

Running is separate from judging (as in Polygraphy's ``Comparator.run`` / ``compare_accuracy``):
:func:`run_outputs` feeds a runner, :func:`compare_outputs` measures (in
:mod:`pipeline.parity_metrics`, re-exported here), :func:`judge` decides.
A :class:`ParityResult` is truthy only on ``pass``, lists *every* failure (one line each: metric,
value, limit) and records in ``needed`` the tolerance that would have made the check pass.

A reference output that is the same for every input fails the check: against it a converter
that emits constants would pass every gate. With a single input the notion is undefined; the
check is then skipped with a note, not failed.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Mapping

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from pipeline.data import ParityInputs
from pipeline.parity_metrics import (  # noqa: F401  (re-exported: callers import them from here)
    CONSTANT_ABS,
    CONSTANT_REL,
    OutputMetrics,
    centred_cosine,
    centred_cosines,
    compare_outputs,
    finite_or_none,
    is_constant,
    reference_spread,
    topk_agreement,
)
from targets.base import Runner

Verdict = Literal["pass", "fail", "unverified"]


# -- tolerances ------------------------------------------------------------------------------


class Tolerance(BaseModel):
    """Limits for one precision; ``None`` disables a check.

    ``max_rel``: max abs error / reference output range. ``min_cosine``: cosine of mean-centred
    outputs, per sample, then the minimum. ``min_top1``/``min_top5``: agreement fractions.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_rel: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    min_cosine: float | None = Field(default=None, ge=-1, le=1)
    min_top1: float | None = Field(default=None, ge=0, le=1)
    min_top5: float | None = Field(default=None, ge=0, le=1)
    #: ``min_top1`` leaves out the inputs on which the reference's top-1 leads its runner-up by
    #: less than this fraction of its output range: at this precision rounding alone can swap
    #: them (a near-tie is not a conversion error). Those inputs still count for every other
    #: check, and the record says how many were left out.
    top1_tie: float | None = Field(default=None, ge=0, le=1)
    #: Judge only the in-distribution inputs (the user's calibration images and the labelled
    #: evaluation images) when there are any: an int8 model calibrated on digits is not expected
    #: to agree on landscape photos or noise. The other inputs are still measured and reported.
    in_distribution_only: bool = False

    def cache_identity(self) -> dict[str, Any]:
        """The fields as part of a stage's cache key. A field added later joins the key only
        when it is set, so cache entries made before it existed stay valid."""
        return {k: v for k, v in self.model_dump().items()
                if not (k in _LATER_FIELDS and v is None)}

    def limits(self) -> dict[str, float]:
        """The limits that are set, by field name."""
        return {k: v for k, v in self.model_dump().items()
                if v is not None and k in _CHECKS}


#: fields added after cache keys first included the tolerance (see Tolerance.cache_identity)
_LATER_FIELDS = ("top1_tie",)

DEFAULT_TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(max_rel=1e-4, min_cosine=0.99999, min_top1=1.0),
    # fp16 rounding moves a tiny model's logits by ~1e-3 of their range (measured: TFLite
    # 6-8e-4, Core ML 1.1-1.5e-3); a lead under 5x that is a coin toss, not a verdict
    "fp16": Tolerance(min_cosine=0.999, min_top1=0.99, top1_tie=0.005),
    "int8": Tolerance(min_cosine=0.99, min_top1=0.95, in_distribution_only=True),
}


def tolerance_for(precision: str, overrides: Mapping[str, Tolerance] | None = None) -> Tolerance:
    """Default tolerance for ``precision`` with the fields *explicitly set* in an override on top.

    ``Tolerance(min_cosine=0.98)`` as the int8 override keeps the default ``min_top1``;
    ``Tolerance(min_top1=None)`` disables that check. A precision with no default needs an override.
    """
    override = (overrides or {}).get(precision)
    base = DEFAULT_TOLERANCES.get(precision)
    if base is None and override is None:
        known = sorted(DEFAULT_TOLERANCES)
        raise ValueError(f"no tolerance for precision {precision!r}; use one of {known} or give an override")
    if override is None:
        return base  # type: ignore[return-value]
    if base is None:
        return override
    merged = base.model_dump() | override.model_dump(include=override.model_fields_set)
    return Tolerance.model_validate(merged)


# -- verdicts --------------------------------------------------------------------------------

#: tolerance field -> (metric attribute, "max" if the metric must stay below the limit else "min")
_CHECKS: dict[str, tuple[str, str]] = {
    "max_rel": ("max_rel", "max"),
    "min_cosine": ("cosine", "min"),
    "min_top1": ("top1_agreement", "min"),
    "min_top5": ("top5_agreement", "min"),
}

_NOT_APPLICABLE = {
    "max_rel": "no output has finite values to compare",
    "min_cosine": "no output has >= 2 values per sample",
    "min_top1": "no output is (N, C) with C >= 2",
    "min_top5": "no output is (N, C) with C >= 2",
}


@dataclass
class ParityResult:
    """Verdict of one parity check; truthy only on ``pass``."""

    verdict: Verdict
    reason: str
    metrics: list[OutputMetrics] = field(default_factory=list)
    n_inputs: int = 0
    failures: list[str] = field(default_factory=list)
    needed: dict[str, float | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    tolerance: Tolerance | None = None
    runtime: str | None = None             # what ran the candidate, where it is not obvious
    all_inputs: ParityResult | None = None  # the verdict on every input, when judged on a subset

    def __bool__(self) -> bool:
        return self.verdict == "pass"

    def __str__(self) -> str:
        return f"{self.verdict}: {self.reason}"

    def worst(self, attr: str) -> float | None:
        """Worst value of a metric over outputs (max for errors, min for agreements)."""
        values = [getattr(m, attr) for m in self.metrics if getattr(m, attr) is not None]
        if not values:
            return None
        return max(values) if attr in ("max_abs", "max_rel", "mean_abs") else min(values)

    def to_json(self) -> dict[str, Any]:
        """Summary (worst over outputs; None where undefined or non-finite) plus per-output detail."""
        out: dict[str, Any] = {"verdict": self.verdict, "reason": self.reason}
        for attr in ("max_abs", "max_rel", "mean_abs", "cosine", "top1_agreement", "top5_agreement"):
            out[attr] = finite_or_none(self.worst(attr))
        out["n_inputs"] = self.n_inputs
        out["outputs"] = [m.to_json() for m in self.metrics]
        out["failures"] = list(self.failures)
        out["needed"] = {k: finite_or_none(v) for k, v in self.needed.items()}
        out["notes"] = list(self.notes)
        out["tolerance"] = self.tolerance.model_dump() if self.tolerance is not None else None
        if self.all_inputs is not None:
            whole = self.all_inputs.to_json()
            out["all_inputs"] = {k: whole[k] for k in ("verdict", "cosine", "top1_agreement",
                                                       "max_rel", "n_inputs")}
        if self.runtime is not None:
            out["runtime"] = self.runtime
        return out

    def failed_with(self, failures: list[str]) -> ParityResult:
        """This result failed by further gates (e.g. accuracy): ``failures`` added, the reason
        naming them."""
        return replace(self, verdict="fail", failures=self.failures + failures,
                       reason="; ".join(failures))

    def worst_of(self, others: Mapping[str, ParityResult]) -> ParityResult:
        """This result merged with the same check on other configurations (e.g. Core ML compute
        units): failing if any fails, each failure prefixed with its configuration's name."""
        merged = replace(self, failures=list(self.failures))
        for name, other in others.items():
            if other.verdict != "pass" and merged.verdict == "pass":
                merged.verdict, merged.reason = other.verdict, f"{name}: {other.reason}"
            merged.failures += [f"{name}: {failure}" for failure in other.failures]
        return merged


def unverified(reason: str) -> ParityResult:
    """A check that could not run here (e.g. Core ML prediction off macOS); never a pass."""
    return ParityResult(verdict="unverified", reason=reason)


def _fmt(value: float) -> str:
    return f"{value:.6g}"


def _structural_failures(m: OutputMetrics, n_inputs: int) -> list[str]:
    """Failures that make an output's values unusable (reported before value limits)."""
    label = f"output '{m.name}'"
    if m.matched_by == "missing":
        return [f"{label}: missing from the candidate's outputs"]
    if m.matched_by == "extra":
        return []
    fails = []
    if m.shape_mismatch:
        fails.append(f"{label}: shape {list(m.cand_shape or ())} != reference shape {list(m.ref_shape or ())}")
    if m.nonfinite_ref:
        fails.append(f"{label}: reference has {m.nonfinite_ref} NaN/Inf values (the reference itself is broken)")
    if m.nonfinite_cand:
        fails.append(f"{label}: candidate has {m.nonfinite_cand} NaN/Inf values")
    if m.n == 0:
        fails.append(f"{label}: empty (0 samples)")
    elif m.n != n_inputs and n_inputs > 0:
        fails.append(f"{label}: {m.n} samples but {n_inputs} inputs were fed")
    if m.ref_constant:
        fails.append(
            f"reference {label} is the same for every input (max spread {_fmt(m.ref_spread or 0.0)} "
            f"over {m.n} inputs, largest |value| {_fmt(m.ref_scale or 0.0)}): the check cannot "
            "tell a working artifact from a constant one; check the model and its weights")
    return fails


def _limit_failure(m: OutputMetrics, limit_name: str, value: float, limit: float,
                   samples: int | None = None) -> str | None:
    attr, kind = _CHECKS[limit_name]
    if (kind == "max" and value <= limit) or (kind == "min" and value >= limit):
        return None
    op = ">" if kind == "max" else "<"
    line = f"output '{m.name}': {attr} {_fmt(value)} {op} limit {_fmt(limit)}"
    if attr in ("top1_agreement", "top5_agreement"):
        n = m.n if samples is None else samples
        line += f" ({round((1 - value) * n)} of {n} samples disagree)"
    return line


def _decided_top1(m: OutputMetrics, tie: float, notes: list[str]) -> tuple[float | None, int]:
    """Top-1 agreement over the inputs whose reference lead is at least ``tie`` (see
    ``Tolerance.top1_tie``), and how many those are."""
    if m.top1_lead is None or m.top1_hit is None:
        return m.top1_agreement, m.n
    decided = m.top1_lead >= tie
    ties = int(len(decided) - decided.sum())
    if ties:
        notes.append(f"output '{m.name}': min_top1 judged on {int(decided.sum())} of "
                     f"{len(decided)} inputs; {ties} near-tie(s) (reference lead < {_fmt(tie)} "
                     "of the output range) not counted")
    if not decided.any():
        return None, 0
    return float(m.top1_hit[decided].mean()), int(decided.sum())


def _check_limits(valid: list[OutputMetrics], tol: Tolerance, failures: list[str], notes: list[str]) -> int:
    """Append a failure for every (output, limit) outside tolerance; return how many were checked."""
    checked = 0
    for limit_name, limit in tol.limits().items():
        attr, _ = _CHECKS[limit_name]
        applicable = [m for m in valid if getattr(m, attr) is not None]
        if valid and not applicable:
            notes.append(f"{limit_name} not checked: {_NOT_APPLICABLE[limit_name]}")
        for m in applicable:
            value, samples = getattr(m, attr), None
            if limit_name == "min_top1" and tol.top1_tie:
                value, samples = _decided_top1(m, tol.top1_tie, notes)
                if value is None:
                    continue
            checked += 1
            line = _limit_failure(m, limit_name, value, limit, samples)
            if line:
                failures.append(line)
    return checked


def _needed(valid: list[OutputMetrics]) -> dict[str, float | None]:
    """The loosest limits these outputs needed (worst value of each metric), Polygraphy-style."""
    needed: dict[str, float | None] = {}
    for limit_name, (attr, kind) in _CHECKS.items():
        values = [getattr(m, attr) for m in valid if getattr(m, attr) is not None]
        needed[limit_name] = (max(values) if kind == "max" else min(values)) if values else None
    return needed


def judge(metrics: list[OutputMetrics], tol: Tolerance, n_inputs: int) -> ParityResult:
    """Verdict for ``metrics`` under ``tol``, after collecting every failure."""
    failures: list[str] = []
    notes: list[str] = []
    if n_inputs <= 0:
        failures.append("no inputs were compared (n_inputs=0)")
    if not any(m.compared for m in metrics):
        failures.append("no outputs were compared")
    for m in metrics:
        failures += _structural_failures(m, n_inputs)
        if m.matched_by == "extra":
            notes.append(f"candidate output '{m.name}' has no reference counterpart; ignored")
        elif m.matched_by == "position":
            notes.append(f"matched by position: reference '{m.name}' <-> candidate '{m.cand_name}'")
    if any(m.compared and m.n == 1 for m in metrics):
        notes.append("reference variation not checked: 1 input, so a constant model cannot be "
                     "told from a working one")
    valid = [m for m in metrics if m.valid]
    checked = _check_limits(valid, tol, failures, notes)
    if not failures and checked == 0:
        failures.append(f"no tolerance limit could be checked (tolerance {tol.limits() or 'sets no limit'})")
    result = ParityResult(
        verdict="fail" if failures else "pass",
        reason="",
        metrics=list(metrics),
        n_inputs=n_inputs,
        failures=failures,
        needed=_needed(valid),
        notes=notes,
        tolerance=tol,
    )
    result.reason = _reason(result, checked)
    return result


def _reason(result: ParityResult, checked: int) -> str:
    if result.failures:
        more = f" (+{len(result.failures) - 1} more)" if len(result.failures) > 1 else ""
        return f"{result.failures[0]}{more}"
    n_out = sum(m.compared for m in result.metrics)
    limits = ", ".join(f"{k}={_fmt(v)}" for k, v in (result.tolerance or Tolerance()).limits().items())
    return f"{n_out} output(s) x {result.n_inputs} inputs within tolerance ({limits}; {checked} checks)"


# -- running ---------------------------------------------------------------------------------


def _collect(acc: dict[str, list[np.ndarray]], outputs: Mapping[str, np.ndarray], batch: int) -> None:
    if acc and set(outputs) != set(acc):
        raise ValueError(f"runner returned outputs {sorted(outputs)} after {sorted(acc)}; names must not change")
    for name, value in outputs.items():
        value = np.asarray(value)
        if value.ndim == 0 or value.shape[0] != batch:
            raise ValueError(
                f"output '{name}' has shape {list(value.shape)} for a batch of {batch}; "
                "outputs must keep the batch dimension"
            )
        acc.setdefault(name, []).append(value)


def run_outputs(runner: Runner, inputs: ParityInputs, batch_size: int = 1) -> dict[str, np.ndarray]:
    """Feed ``inputs`` to ``runner`` in batches of ``batch_size`` (default 1, as deployed); stack to (N, ...).

    Enters ``with runner`` unless it is already active. The last batch may be smaller.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    acc: dict[str, list[np.ndarray]] = {}
    ctx = contextlib.nullcontext(runner) if runner.is_active else runner
    with ctx:
        names = runner.input_names()
        if len(names) != 1:
            raise ValueError(f"parity feeds one image tensor, but the runner expects inputs {names}")
        for start in range(0, len(inputs), batch_size):
            chunk = inputs.batch[start : start + batch_size].copy()  # runners may not corrupt the set
            _collect(acc, runner.infer({names[0]: chunk}), len(chunk))
    return {name: np.concatenate(parts, axis=0) for name, parts in acc.items()}


def check_parity(
    ref: Mapping[str, np.ndarray] | Runner,
    cand_runner: Runner,
    inputs: ParityInputs,
    tol: Tolerance,
    *,
    batch_size: int = 1,
) -> ParityResult:
    """Run the candidate (and the reference, if given as a runner) on ``inputs`` and judge.

    Exceptions raised by a runner propagate; the caller decides whether a crash is a failure.
    """
    ref_outputs = run_outputs(ref, inputs, batch_size) if isinstance(ref, Runner) else ref
    cand_outputs = run_outputs(cand_runner, inputs, batch_size)
    return judge(compare_outputs(ref_outputs, cand_outputs), tol, len(inputs))
