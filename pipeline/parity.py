"""Parity: metrics between a reference and a candidate's outputs, and a verdict against a tolerance.

Running is separate from judging (as in Polygraphy's ``Comparator.run`` / ``compare_accuracy``):
:func:`run_outputs` feeds a runner, :func:`compare_outputs` measures, :func:`judge` decides.
A :class:`ParityResult` is truthy only on ``pass``, lists *every* failure (one line each: metric,
value, limit) and records in ``needed`` the tolerance that would have made the check pass.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Mapping

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from pipeline.data import ParityInputs
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
    #: Judge only the in-distribution inputs (the user's calibration images and the labelled
    #: evaluation images) when there are any: an int8 model calibrated on digits is not expected
    #: to agree on landscape photos or noise. The other inputs are still measured and reported.
    in_distribution_only: bool = False

    def limits(self) -> dict[str, float]:
        """The limits that are set, by field name."""
        return {k: v for k, v in self.model_dump().items()
                if v is not None and k in _CHECKS}


DEFAULT_TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(max_rel=1e-4, min_cosine=0.99999, min_top1=1.0),
    "fp16": Tolerance(min_cosine=0.999, min_top1=0.99),
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


# -- metrics ---------------------------------------------------------------------------------


@dataclass
class OutputMetrics:
    """Comparison of one output. Numeric metrics are ``None`` where undefined or not computable
    (shape mismatch, non-finite values, empty output, missing counterpart)."""

    name: str  # reference output name (candidate's name for an extra candidate output)
    cand_name: str | None
    matched_by: Literal["name", "position", "missing", "extra"]
    ref_shape: tuple[int, ...] | None
    cand_shape: tuple[int, ...] | None
    n: int = 0
    max_abs: float | None = None
    max_rel: float | None = None
    mean_abs: float | None = None
    cosine: float | None = None
    snr_db: float | None = None
    psnr_db: float | None = None
    top1_agreement: float | None = None
    top5_agreement: float | None = None
    nonfinite_ref: int = 0
    nonfinite_cand: int = 0
    shape_mismatch: bool = False

    @property
    def compared(self) -> bool:
        """Both sides exist (the values may still be unusable)."""
        return self.matched_by in ("name", "position")

    @property
    def valid(self) -> bool:
        """Compared, same shape, all finite, non-empty: value limits apply."""
        return (
            self.compared
            and not self.shape_mismatch
            and self.nonfinite_ref == 0
            and self.nonfinite_cand == 0
            and self.max_abs is not None
        )

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["ref_shape"] = list(self.ref_shape) if self.ref_shape is not None else None
        out["cand_shape"] = list(self.cand_shape) if self.cand_shape is not None else None
        return {k: _finite_or_none(v) for k, v in out.items()}


def _finite_or_none(value: Any) -> Any:
    """JSON-safe: non-finite floats (inf SNR of identical outputs, inf max_rel) become None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _pairs(ref: Mapping[str, Any], cand: Mapping[str, Any]) -> tuple[list[tuple[str | None, str | None]], str]:
    """Match outputs by name; by position when names differ but counts match."""
    if set(ref) == set(cand):
        return [(k, k) for k in ref], "name"
    if len(ref) == len(cand):
        return list(zip(ref, cand)), "position"
    pairs: list[tuple[str | None, str | None]] = [(k, k if k in cand else None) for k in ref]
    pairs += [(None, k) for k in cand if k not in ref]
    return pairs, "name"


def _as_float(array: Any) -> np.ndarray:
    out = np.asarray(array, dtype=np.float64)
    return out.reshape(1) if out.ndim == 0 else out


def _db(num: float, den: float) -> float:
    if den == 0:
        return math.inf
    if num == 0:
        return -math.inf
    return 10.0 * math.log10(num / den)


def _max_rel(max_abs: float, ref: np.ndarray) -> float:
    """max_abs / reference range; max |ref| if the range is zero; 0 or inf if that is zero too."""
    scale = float(ref.max() - ref.min()) or float(np.abs(ref).max())
    if scale == 0:
        return 0.0 if max_abs == 0 else math.inf
    return max_abs / scale


def centred_cosines(ref: np.ndarray, cand: np.ndarray) -> np.ndarray | None:
    """Per sample, the cosine between mean-centred flattened samples; None if < 2 values each.

    Two constant samples count as 1.0 (identical up to an offset); one constant and one not, 0.0.
    A sample is constant when its centred norm is below 1e-6 of its magnitude: centring a
    constant leaves rounding residue (e.g. 85.44 - mean(85.44, 85.44, 85.44) need not be 0).
    """
    a = ref.reshape(ref.shape[0], -1).astype(np.float64)
    b = cand.reshape(cand.shape[0], -1).astype(np.float64)
    if a.shape[1] < 2:
        return None
    floor_a = 1e-6 * np.abs(a).max(axis=1) * np.sqrt(a.shape[1])
    floor_b = 1e-6 * np.abs(b).max(axis=1) * np.sqrt(b.shape[1])
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    na, nb = np.where(na <= floor_a, 0.0, na), np.where(nb <= floor_b, 0.0, nb)
    both_zero = (na == 0) & (nb == 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where(na * nb > 0, (a * b).sum(axis=1) / (na * nb), 0.0)
    return np.clip(np.where(both_zero, 1.0, cos), -1.0, 1.0)


def centred_cosine(ref: np.ndarray, cand: np.ndarray) -> float | None:
    """Min over samples of :func:`centred_cosines` (the worst sample); None if < 2 values each."""
    cos = centred_cosines(ref, cand)
    return None if cos is None else float(cos.min())


def topk_agreement(ref: np.ndarray, cand: np.ndarray, k: int) -> float | None:
    """Fraction of samples whose reference top-1 class is in the candidate's top-k.

    Defined for (N, C) outputs with C >= 2; k is capped at C. With k=1 this is top-1 agreement.
    """
    if ref.ndim != 2 or ref.shape[1] < 2 or ref.shape[0] == 0:
        return None
    k = min(k, ref.shape[1])
    ref_top1 = np.argmax(ref, axis=1)
    cand_topk = np.argsort(-cand, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(cand_topk == ref_top1[:, None], axis=1)))


def _fill_values(m: OutputMetrics, ref: np.ndarray, cand: np.ndarray) -> None:
    diff = np.abs(cand - ref)
    m.max_abs = float(diff.max())
    m.max_rel = _max_rel(m.max_abs, ref)
    m.mean_abs = float(diff.mean())
    m.cosine = centred_cosine(ref, cand)
    mse = float(np.mean(diff**2))
    m.snr_db = _db(float(np.mean(ref**2)), mse)
    m.psnr_db = _db(float(ref.max() - ref.min()) ** 2, mse)
    m.top1_agreement = topk_agreement(ref, cand, 1)
    m.top5_agreement = topk_agreement(ref, cand, 5)


def _compare_one(ref_name: str, cand_name: str, ref_raw: Any, cand_raw: Any, matched_by: str) -> OutputMetrics:
    ref, cand = _as_float(ref_raw), _as_float(cand_raw)
    m = OutputMetrics(
        name=ref_name,
        cand_name=cand_name,
        matched_by=matched_by,  # type: ignore[arg-type]
        ref_shape=tuple(ref.shape),
        cand_shape=tuple(cand.shape),
        n=int(ref.shape[0]),
        nonfinite_ref=int(np.count_nonzero(~np.isfinite(ref))),
        nonfinite_cand=int(np.count_nonzero(~np.isfinite(cand))),
        shape_mismatch=ref.shape != cand.shape,
    )
    if not m.shape_mismatch and m.nonfinite_ref == 0 and m.nonfinite_cand == 0 and ref.size > 0:
        _fill_values(m, ref, cand)
    return m


def compare_outputs(ref: Mapping[str, np.ndarray], cand: Mapping[str, np.ndarray]) -> list[OutputMetrics]:
    """Metrics per output; arrays are (N, ...). Unmatched outputs appear as ``missing``/``extra``."""
    pairs, how = _pairs(ref, cand)
    out: list[OutputMetrics] = []
    for r, c in pairs:
        if r is not None and c is not None:
            out.append(_compare_one(r, c, ref[r], cand[c], how))
        elif r is not None:
            shape = tuple(_as_float(ref[r]).shape)
            out.append(OutputMetrics(name=r, cand_name=None, matched_by="missing", ref_shape=shape, cand_shape=None))
        else:
            assert c is not None
            shape = tuple(_as_float(cand[c]).shape)
            out.append(OutputMetrics(name=c, cand_name=c, matched_by="extra", ref_shape=None, cand_shape=shape))
    return out


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
            out[attr] = _finite_or_none(self.worst(attr))
        out["n_inputs"] = self.n_inputs
        out["outputs"] = [m.to_json() for m in self.metrics]
        out["failures"] = list(self.failures)
        out["needed"] = {k: _finite_or_none(v) for k, v in self.needed.items()}
        out["notes"] = list(self.notes)
        out["tolerance"] = self.tolerance.model_dump() if self.tolerance is not None else None
        return out


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
    return fails


def _limit_failure(m: OutputMetrics, limit_name: str, value: float, limit: float) -> str | None:
    attr, kind = _CHECKS[limit_name]
    if (kind == "max" and value <= limit) or (kind == "min" and value >= limit):
        return None
    op = ">" if kind == "max" else "<"
    line = f"output '{m.name}': {attr} {_fmt(value)} {op} limit {_fmt(limit)}"
    if attr in ("top1_agreement", "top5_agreement"):
        line += f" ({round((1 - value) * m.n)} of {m.n} samples disagree)"
    return line


def _check_limits(valid: list[OutputMetrics], tol: Tolerance, failures: list[str], notes: list[str]) -> int:
    """Append a failure for every (output, limit) outside tolerance; return how many were checked."""
    checked = 0
    for limit_name, limit in tol.limits().items():
        attr, _ = _CHECKS[limit_name]
        applicable = [m for m in valid if getattr(m, attr) is not None]
        if valid and not applicable:
            notes.append(f"{limit_name} not checked: {_NOT_APPLICABLE[limit_name]}")
        for m in applicable:
            checked += 1
            line = _limit_failure(m, limit_name, getattr(m, attr), limit)
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
