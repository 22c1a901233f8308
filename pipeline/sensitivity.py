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
  (one calibration, pipeline.qdq) and judged by the real gates, so an imperfect order costs
  attempts, never a wrong verdict. On the tiny digits model both methods pick the same three
  most sensitive layers.

A layer "kept in float" is ONNX Runtime's ``nodes_to_exclude``: its weights and bias stay
float, and so does its input (it reads the tensor in front of the Q/DQ pair a quantized
neighbour shares; see ``pipeline.qdq.keep_float_layers_float`` for why ONNX Runtime would
otherwise quantize it anyway); its output is quantized where a quantized neighbour reads it.

The search keeps the top k layers in float for k = 1, 2, 4, … up to the cap, then bisects
between the largest failing and the smallest passing k (it assumes more float layers never
hurt, which the gates re-check anyway).
"""
from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx

from pipeline.data import ParityInputs
from pipeline.parity import centred_cosines, run_outputs
from pipeline.qdq import Calibrated, qdq_model, quantize_calibrated, weighted_nodes
from pipeline.reference import Reference
from pipeline.verify import IN_DISTRIBUTION
from targets.onnxruntime import OrtRunner

#: A gate: path of a candidate ONNX model -> its check record (``parity``, maybe ``accuracy``).
Gate = Callable[[Path], dict[str, Any]]

_PROBE_BATCH = 64


@dataclass(frozen=True)
class Probe:
    """The inputs sensitivity is measured on and the reference's (first) output on them."""

    inputs: ParityInputs
    expected: np.ndarray

    @classmethod
    def of(cls, reference: Reference) -> "Probe":
        """In-distribution parity inputs plus the whole labelled evaluation set (of which the
        parity set's ``eval`` inputs are a sample); every parity input when there is neither."""
        name = next(iter(reference.outputs))
        kinds = ("calib",) if reference.evaluation is not None else IN_DISTRIBUTION
        chosen = np.flatnonzero(np.isin(reference.inputs.kinds, kinds))
        if len(chosen) == 0 and reference.evaluation is None:
            chosen = np.arange(len(reference.inputs))
        batch, expected = [reference.inputs.batch[chosen]], [reference.outputs[name][chosen]]
        if reference.evaluation is not None:
            batch.append(reference.evaluation.inputs)
            expected.append(reference.evaluation.logits)
        return cls.of_arrays(np.concatenate(batch), np.concatenate(expected))

    @classmethod
    def of_arrays(cls, batch: np.ndarray, expected: np.ndarray) -> "Probe":
        n = len(batch)
        return cls(ParityInputs([f"probe:{i}" for i in range(n)], ["probe"] * n, batch), expected)

    def save(self, path: Path) -> Path:
        """Write the probe to ``path`` (.npz) for a converter's child process."""
        with open(path, "wb") as handle:
            np.savez(handle, batch=self.inputs.batch, expected=self.expected)
        return path

    @classmethod
    def load(cls, path: Path) -> "Probe":
        with np.load(path) as data:
            return cls.of_arrays(data["batch"], data["expected"])

    def error(self, model: Path, threads: int = 1) -> float:
        """Mean over the probe inputs of 1 − centred cosine to the reference (0 = identical),
        for an ONNX model on ONNX Runtime."""
        return self.error_of(OrtRunner(model, threads))

    def error_of(self, runner: Any) -> float:
        """:meth:`error` on any runner (pipeline.targets.base.Runner) of the candidate."""
        outputs = run_outputs(runner, self.inputs, _PROBE_BATCH)
        cosines = centred_cosines(self.expected.astype(np.float64),
                                  next(iter(outputs.values())).astype(np.float64))
        if cosines is None:
            raise ValueError("sensitivity needs an output with at least 2 values per sample")
        return float(np.mean(1.0 - cosines))


def layer_sensitivity(calibrated: Calibrated, probe: Probe, per_channel: bool,
                      activations: str, workdir: Path, threads: int = 1) -> dict[str, float]:
    """Weighted node -> probe error with that node alone quantized, most sensitive first."""
    path = workdir / "one_layer.onnx"
    errors = {}
    for node in calibrated.weighted_nodes():
        model = qdq_model(calibrated, per_channel, activations, only=[node])
        path.write_bytes(model.SerializeToString())
        errors[node] = probe.error(path, threads)
    return dict(sorted(errors.items(), key=lambda item: -item[1]))


def layer_costs(model: onnx.ModelProto) -> dict[str, tuple[int, int]]:
    """Weighted node -> (weight parameters, multiply-adds per sample), from the shape-inferred
    graph: a Conv's MACs are its weight count times its output's spatial size."""
    weights = {init.name: math.prod(init.dims) for init in model.graph.initializer}
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(model.graph.value_info) + list(model.graph.output)}
    costs = {}
    for node in weighted_nodes(model):
        params = weights[node.input[1]]
        spatial = shapes.get(node.output[0], [])[2:] if node.op_type == "Conv" else []
        costs[node.name] = (params, params * math.prod(d for d in spatial if d > 0))
    return costs


def attempt_summary(float_layers: int, record: dict[str, Any], size: int) -> dict[str, Any]:
    """One attempt, as the record keeps it."""
    parity = record["parity"]
    accuracy = record.get("accuracy")
    return {"float_layers": float_layers, "verdict": parity["verdict"],
            "cosine": parity.get("cosine"), "top1_agreement": parity.get("top1_agreement"),
            "accuracy_delta": accuracy["delta"] if accuracy else None,
            "failures": parity.get("failures", []), "bytes": size}


def _schedule(cap: int) -> list[int]:
    """k = 1, 2, 4, … and the cap itself."""
    ks = [1 << i for i in range(cap.bit_length()) if 1 << i <= cap]
    return ks if ks[-1] == cap else ks + [cap]


@dataclass(frozen=True)
class Ranking:
    """The all-int8 model's probe error and each layer's sensitivity, most sensitive first."""

    int8_error: float
    sensitivity: dict[str, float]


def rank_layers(calibrated: Calibrated, int8_model: Path, reference: Reference, workdir: Path,
                *, per_channel: bool, activations: str = "uint8", threads: int = 1) -> Ranking:
    """Sensitivity of every weighted layer; ``int8_model`` is the all-int8 model of
    ``calibrated`` (its error is the yardstick the record shows next to each layer's)."""
    workdir.mkdir(parents=True, exist_ok=True)
    probe = Probe.of(reference)
    return Ranking(probe.error(int8_model, threads),
                   layer_sensitivity(calibrated, probe, per_channel, activations, workdir,
                                     threads))


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
        (weight parameters, MACs), e.g. :func:`layer_costs` of the ONNX model."""
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


def onnx_candidates(calibrated: Calibrated, workdir: Path, *, per_channel: bool,
                    activations: str = "uint8") -> Make:
    """Candidates re-quantized by ONNX Runtime from one calibration (``workdir``: one model per
    attempt)."""
    workdir.mkdir(parents=True, exist_ok=True)

    def make(float_layers: list[str]) -> tuple[Path, dict[str, Any]]:
        path = workdir / f"mixed_{len(float_layers)}.onnx"
        return path, quantize_calibrated(calibrated, path, per_channel, activations,
                                         float_layers)

    return make


def search_float_layers(ranking: Ranking, make: Make, gate: Gate, *,
                        max_float_layers: int) -> MixedPrecision:
    """The fewest most-sensitive layers (at most ``max_float_layers``) whose float copy makes
    ``gate`` pass; ``make`` builds each candidate (any runtime's quantizer)."""
    order = list(ranking.sensitivity)
    result = MixedPrecision(ranking)
    verdicts: dict[int, bool] = {}

    def attempt(k: int) -> bool:
        path, info = make(order[:k])
        record = gate(path)
        result.attempts.append(attempt_summary(k, record, path.stat().st_size))
        verdicts[k] = record["parity"]["verdict"] == "pass"
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


def conclude(found: MixedPrecision, first: dict[str, Any], path: Path,
             recheck: Callable[[Path], dict[str, Any]], costs: dict[str, tuple[int, int]], *,
             int8_bytes: int, started: float, cap: int,
             label: Callable[[str], str] = str) -> tuple[dict[str, Any], dict[str, Any], str]:
    """The node's record, the ``mixed_precision`` summary and one warning, after a search.

    ``first``: the all-int8 model's record (latency included); ``path``: the artifact, which
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
    record = recheck(path)
    summary["cost"] = {**found.cost(costs), "bytes": path.stat().st_size,
                       "int8_bytes": int8_bytes, "median_ms": record["latency"]["median_ms"],
                       "int8_median_ms": first["latency"]["median_ms"]}
    names = ", ".join(label(name) for name in found.float_layers)
    return record, summary, (f"{len(found.float_layers)} layer(s) kept in float so that int8 "
                             f"passes its gates: {names}")
