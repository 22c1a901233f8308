"""Task-level checks on labelled data: accuracy with a 95 % interval, its delta to the reference,
and the accuracy gates per precision."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

Z_95 = 1.959963984540054


def wilson_interval(correct: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (sound near 0 and 1, unlike the normal one)."""
    if n == 0:
        return (0.0, 1.0)
    p = correct / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


def top1(logits: np.ndarray) -> np.ndarray:
    return np.asarray(logits).reshape(len(logits), -1).argmax(axis=1)


def accuracy_record(logits: np.ndarray, labels: np.ndarray,
                    reference_logits: np.ndarray) -> dict[str, Any]:
    """``{value, ci_low, ci_high, delta, n, top1_agreement}``; fractions in [0, 1];
    delta = value − the reference's accuracy on the same images."""
    predicted, reference = top1(logits), top1(reference_logits)
    n = len(labels)
    correct = int((predicted == labels).sum())
    value = correct / n if n else 0.0
    ref_value = float((reference == labels).mean()) if n else 0.0
    low, high = wilson_interval(correct, n)
    return {"value": value, "ci_low": low, "ci_high": high, "delta": value - ref_value, "n": n,
            "reference": ref_value,
            "top1_agreement": float((predicted == reference).mean()) if n else 0.0}


def accuracy_failures(record: dict[str, Any], max_drop: float | None) -> list[str]:
    """Gate: the accuracy may fall at most ``max_drop`` (a fraction) below the reference's."""
    if max_drop is None or record["n"] == 0:
        return []
    drop = -record["delta"]
    if drop > max_drop + 1e-12:
        return [f"accuracy {100 * record['value']:.2f} % is {100 * drop:.2f} pt below the "
                f"reference's {100 * record['reference']:.2f} % (limit {100 * max_drop:.2f} pt)"]
    return []
