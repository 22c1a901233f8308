"""Mixed-precision fallback: when an int8 model fails its gates, rank the weighted layers by
quantization sensitivity and keep the most sensitive ones in float until the gates pass.

**Sensitivity = the output error with that layer alone quantized** (the rest float), measured
as the mean over inputs of 1 − centred cosine between its outputs and the reference's, on the
in-distribution parity inputs and the labelled evaluation set (the inputs the int8 gates judge).
Quantizing one layer alone is chosen over "all but one layer" because:

* cost: ONNX Runtime's quantizer spends its time quantizing weights channel by channel, so one
  layer alone costs that layer (0.04 s on MobileNetV2 1.0) while all-but-one costs the whole
  model (2.2 s) for every layer: O(model) for the ranking instead of O(model × layers);
* signal: each layer's error is measured against the float model, not as the small difference
  of two large errors (on the tiny digits model, 49 of 53 leave-one-out gains are below 3 % of
  the all-int8 error and 15 are negative);
* the ranking only orders the search: every candidate mixed model is re-quantized for real
  (one calibration, pipeline.int8.qdq) and judged by the real gates, so an imperfect order costs
  attempts, never a wrong verdict. On the tiny digits model both methods pick the same three
  most sensitive layers.

What "kept in float" means is each runtime's own (ONNX Runtime's ``nodes_to_exclude``, see
pipeline.int8.qdq; the TFLite quantizer's ``denylisted_nodes``, see targets.tflite.quantize):
each runtime supplies only "quantize with these layers in float" and its weighted layers with
their costs; the ranking (:func:`rank_alone`), the search and the record are this module's.

The search keeps the top k layers in float for k = 1, 2, 4, … up to the cap, then bisects
between the largest failing and the smallest passing k (it assumes more float layers never
hurt, which the gates re-check anyway).
"""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pipeline.int8.probe import Probe
from pipeline.parity_metrics import finite_or_none
from pipeline.verify import Checks

#: A gate: path of a candidate model -> its checks (parity, maybe accuracy; no latency).
Gate = Callable[[Path], Checks]


def attempt_summary(float_layers: int, checks: Checks, size: int) -> dict[str, Any]:
    """One attempt, as the record keeps it."""
    parity, accuracy = checks.parity, checks.accuracy
    return {"float_layers": float_layers, "verdict": parity.verdict,
            "cosine": finite_or_none(parity.worst("cosine")),
            "top1_agreement": finite_or_none(parity.worst("top1_agreement")),
            "accuracy_delta": accuracy["delta"] if accuracy else None,
            "failures": list(parity.failures), "bytes": size}


def _schedule(cap: int) -> list[int]:
    """k = 1, 2, 4, … and the cap itself."""
    ks = [1 << i for i in range(cap.bit_length()) if 1 << i <= cap]
    return ks if ks[-1] == cap else ks + [cap]


def rank_alone(layers: list[str], quantize_alone: Callable[[str], Any], probe: Probe,
               runner: Callable[[Any], Any]) -> dict[str, float]:
    """Layer -> probe error with that layer alone quantized, most sensitive first: the one
    ranking every runtime uses. ``quantize_alone(layer)`` builds the model (a path, or bytes a
    child writes), ``runner(model)`` runs it (a targets.base.Runner)."""
    errors = {layer: probe.error_of(runner(quantize_alone(layer))) for layer in layers}
    return dict(sorted(errors.items(), key=lambda item: -item[1]))


@dataclass(frozen=True)
class Ranking:
    """The all-int8 model's probe error and each layer's sensitivity, most sensitive first."""

    int8_error: float
    sensitivity: dict[str, float]


@dataclass
class MixedPrecision:
    """Outcome of the search: the float layers of the passing model (if any) and the trail."""

    ranking: Ranking
    attempts: list[dict[str, Any]] = field(default_factory=list)
    float_layers: list[str] = field(default_factory=list)
    path: Path | None = None          # the passing mixed-precision model
    info: dict[str, Any] = field(default_factory=dict)   # its quantize facts

    @property
    def passed(self) -> bool:
        return self.path is not None

    def cost(self, costs: dict[str, tuple[int, int]]) -> dict[str, Any]:
        """Share of the weighted layers' parameters and MACs left in float; ``costs``: layer ->
        (weight parameters, MACs), as each runtime lists its weighted layers."""
        params = sum(p for p, _ in costs.values()) or 1
        macs = sum(m for _, m in costs.values()) or 1
        kept = [costs[n] for n in self.float_layers]
        return {"float_layers": len(self.float_layers), "of_layers": len(costs),
                "params_share": sum(p for p, _ in kept) / params,
                "macs_share": sum(m for _, m in kept) / macs}

    def to_json(self) -> dict[str, Any]:
        return {"float_layers": list(self.float_layers), "int8_error": self.ranking.int8_error,
                "sensitivity": dict(self.ranking.sensitivity), "attempts": list(self.attempts),
                "method": "one layer quantized alone; error = mean(1 - centred cosine) on "
                          "in-distribution inputs and the evaluation set"}


#: Builds one candidate: the layers to keep in float -> (path of the model, its quantize facts).
Make = Callable[[list[str]], tuple[Path, dict[str, Any]]]


def search_float_layers(ranking: Ranking, make: Make, gate: Gate, *,
                        max_float_layers: int) -> MixedPrecision:
    """The fewest most-sensitive layers (at most ``max_float_layers``) whose float copy makes
    ``gate`` pass; ``make`` builds each candidate (any runtime's quantizer)."""
    order = list(ranking.sensitivity)
    result = MixedPrecision(ranking)
    verdicts: dict[int, bool] = {}

    def attempt(k: int) -> bool:
        path, info = make(order[:k])
        checks = gate(path)
        result.attempts.append(attempt_summary(k, checks, path.stat().st_size))
        verdicts[k] = checks.passed
        if verdicts[k] and (not result.passed or k < len(result.float_layers)):
            result.float_layers, result.path, result.info = order[:k], path, info
        return verdicts[k]

    cap = min(max_float_layers, len(order))
    for k in _schedule(cap) if cap else []:
        if attempt(k):
            break
    if result.passed:
        low = max((k for k, ok in verdicts.items() if not ok), default=0)
        high = len(result.float_layers)
        while high - low > 1:
            middle = (low + high) // 2
            if attempt(middle):
                high = middle
            else:
                low = middle
    return result


def conclude(found: MixedPrecision, first: Checks, path: Path,
             recheck: Callable[[Path], Checks], costs: dict[str, tuple[int, int]], *,
             int8_bytes: int, started: float, cap: int,
             label: Callable[[str], str] = str) -> tuple[Checks, dict[str, Any], str]:
    """The node's checks, the ``mixed_precision`` summary and one warning, after a search.

    ``first``: the all-int8 model's checks (latency included); ``path``: the artifact, which
    the passing candidate replaces before ``recheck`` (a full check with latency) runs on it;
    ``label`` turns a layer name into what the warning shows."""
    summary = found.to_json()
    summary["attempts"].insert(0, attempt_summary(0, first, int8_bytes))
    summary["seconds"] = round(time.perf_counter() - started, 1)
    if not found.passed:
        return first, summary, (f"int8 failed its gates, and so did every mixed-precision model "
                                f"with up to {cap} layers in float")
    assert found.path is not None
    shutil.copyfile(found.path, path)
    checks = recheck(path)
    summary["cost"] = {**found.cost(costs), "bytes": path.stat().st_size,
                       "int8_bytes": int8_bytes,
                       "median_ms": (checks.latency or {}).get("median_ms"),
                       "int8_median_ms": (first.latency or {}).get("median_ms")}
    names = ", ".join(label(name) for name in found.float_layers)
    return checks, summary, (f"{len(found.float_layers)} layer(s) kept in float so that int8 "
                             f"passes its gates: {names}")


def fall_back(ranking: Ranking, make: Make, gate: Gate, *, first: Checks, path: Path,
              recheck: Callable[[Path], Checks], costs: dict[str, tuple[int, int]],
              cap: int, started: float, label: Callable[[str], str] = str
              ) -> tuple[Checks, dict[str, Any], str, dict[str, Any]]:
    """The whole fallback after the ranking, the same for every runtime: search, then
    :func:`conclude`. Returns the node's checks, the ``mixed_precision`` summary, one warning and
    the chosen candidate's quantize facts ({} when none passed)."""
    int8_bytes = path.stat().st_size
    found = search_float_layers(ranking, make, gate, max_float_layers=cap)
    checks, summary, warning = conclude(found, first, path, recheck, costs,
                                        int8_bytes=int8_bytes, started=started, cap=cap,
                                        label=label)
    return checks, summary, warning, found.info
