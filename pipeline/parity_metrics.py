"""Parity metrics: how far a candidate's outputs are from a reference's, output by output.

:func:`compare_outputs` measures; :func:`pipeline.parity.judge` decides. Every metric is
computed in float64. Besides the candidate-vs-reference metrics, each output records how much
the *reference* varies across inputs (:attr:`OutputMetrics.ref_spread`): a reference that is the
same for every input would let a converter that emits constants pass every gate.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Mapping

import numpy as np

#: A reference output is "the same for every input" when no sample differs from the first by
#: more than this fraction of the output's largest magnitude (about 8 float32 ulps) ...
CONSTANT_REL = 1e-6
#: ... or by more than this absolute floor (float32's smallest normal number), which decides
#: for an all-zero output, whose magnitude is 0.
CONSTANT_ABS = float(np.finfo(np.float32).tiny)


@dataclass
class OutputMetrics:
    """Comparison of one output. Numeric metrics are ``None`` where undefined or not computable
    (shape mismatch, non-finite values, empty output, missing counterpart).

    ``ref_spread`` (the largest |difference| between any reference sample and the first) and
    ``ref_scale`` (the largest |reference value|) describe the reference alone; they are ``None``
    unless the reference is finite, non-empty and has >= 2 samples.
    """

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
    ref_spread: float | None = None
    ref_scale: float | None = None
    #: per sample: the reference's lead of its top-1 over its runner-up class, as a fraction of
    #: the reference's output range, and whether the candidate's top-1 is the reference's
    #: ((N, C) outputs only; not in the JSON)
    top1_lead: np.ndarray | None = field(default=None, repr=False, compare=False)
    top1_hit: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def ref_constant(self) -> bool | None:
        """The reference is the same for every input (see :func:`is_constant`); ``None`` when
        that was not measured (fewer than 2 samples, non-finite or empty reference)."""
        if self.ref_spread is None or self.ref_scale is None:
            return None
        return is_constant(self.ref_spread, self.ref_scale)

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
        out = {k: v for k, v in asdict(self).items() if k not in ("top1_lead", "top1_hit")}
        out["ref_shape"] = list(self.ref_shape) if self.ref_shape is not None else None
        out["cand_shape"] = list(self.cand_shape) if self.cand_shape is not None else None
        out["ref_constant"] = self.ref_constant
        return {k: finite_or_none(v) for k, v in out.items()}


def finite_or_none(value: Any) -> Any:
    """JSON-safe: non-finite floats (inf SNR of identical outputs, inf max_rel) become None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def is_constant(spread: float, scale: float) -> bool:
    """No variation: ``spread`` is within :data:`CONSTANT_REL` of ``scale`` (or :data:`CONSTANT_ABS`)."""
    return spread <= max(CONSTANT_REL * scale, CONSTANT_ABS)


def reference_spread(ref: np.ndarray) -> tuple[float, float] | None:
    """(spread, scale) of a finite (N, ...) reference, in float64: the largest |difference|
    between any sample and the first, and the largest |value|. None with < 2 samples or no values."""
    if ref.shape[0] < 2 or ref.size == 0:
        return None
    flat = ref.reshape(ref.shape[0], -1).astype(np.float64)
    return float(np.abs(flat[1:] - flat[0]).max()), float(np.abs(flat).max())


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
    if m.top1_agreement is not None:
        ordered = np.sort(ref.astype(np.float64), axis=1)
        span = float(ref.max() - ref.min()) or 1.0
        m.top1_lead = (ordered[:, -1] - ordered[:, -2]) / span
        m.top1_hit = np.argmax(ref, axis=1) == np.argmax(cand, axis=1)


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
    spread = reference_spread(ref) if m.nonfinite_ref == 0 else None
    if spread is not None:
        m.ref_spread, m.ref_scale = spread
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
