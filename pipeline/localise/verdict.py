"""Per-layer errors against the reference and the verdict: the first layer that diverges.

A layer *causes* a divergence when its error exceeds the layer tolerance while every layer it
is computed from is within it, and the error is carried on to the model's output: a chain of
layers still drifting leads from it to a last layer (one nothing reads) over the tolerance.
Drifting is judged against the cause's own inputs: a layer's severity (its error as a share
of the tolerance) stays over DRIFT_RATIO times the worst of them (and over DRIFT_FLOOR). The
layers after the cause only inherit its error. A layer over the tolerance whose consumers
fall back to the error its inputs had is *transient*: int8 noise in a squeeze-excite squeeze
of eight values that the gate after it absorbs is not the model's fault, and is listed apart;
a real fault whose effect stays under the limit until the output crosses it is still named at
its own layer, not at the late layer where the drift crosses the limit. Metrics, per layer:
the largest absolute error as a fraction of the reference tensor's range (over all samples)
and the cosine of the mean-centred tensors (per sample, the minimum), both in float64.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

import numpy as np

from pipeline.localise.layer_map import Layer, LayerMap
from pipeline.localise.tolerance import LayerTolerance

TOP = 5


@dataclass
class LayerError:
    """One compared layer: where it is in each naming, and how far it is from the reference."""

    torch_module: str
    fx_node: str
    onnx_node: str
    onnx_tensor: str          # the ONNX tensor compared (the group's last)
    target_tensor: str
    fused_with: list[str]     # torch modules of the ONNX layers the target computes in one kernel
    max_rel: float
    cosine: float
    within: bool
    inputs: list[str]         # ONNX tensors of the compared layers it reads
    added: float = 0.0        # max_rel minus the largest max_rel among its inputs
    severity: float = 0.0     # the error as a share of the tolerance (over 1: not within)


def label(layer: Layer) -> str:
    """What users read: the torch module path; an op in the model's own forward by its node."""
    return layer.module or f"forward:{layer.fx_node}"


#: a tensor that varies by less than this fraction of its magnitude is treated as constant:
#: the error is measured against that magnitude instead of its (float-noise) range, and its
#: centred cosine, which is noise then, is not used (a saturated hardsigmoid gate of ~1.0)
FLAT = 1e-3


def layer_metrics(ref: np.ndarray, cand: np.ndarray) -> tuple[float, float]:
    """(max |error| / reference range, min over samples of the centred cosine), in float64
    one sample at a time (a layer of a full-size model holds tens of MB per sample)."""
    if not len(ref) or not np.size(ref):
        return 0.0, 1.0
    if not np.isfinite(cand).all():
        return float("inf"), -1.0
    magnitude = float(np.abs(ref).max())
    scale = max(float(ref.max()) - float(ref.min()), FLAT * magnitude)
    flat = FLAT * magnitude * np.sqrt(np.size(ref[0]))
    error, cosines = 0.0, []
    for r_sample, c_sample in zip(ref, cand):
        r = np.asarray(r_sample, np.float64).ravel()
        c = np.asarray(c_sample, np.float64).ravel()
        error = max(error, float(np.abs(c - r).max()))
        rc, cc = r - r.mean(), c - c.mean()
        rn, cn = float(np.linalg.norm(rc)), float(np.linalg.norm(cc))
        if rn <= flat and cn <= flat:
            cosines.append(1.0)             # both constant: the centred cosine is noise
        else:
            cosines.append(float(rc @ cc) / (rn * cn) if rn * cn > 0 else 0.0)
    max_rel = error / scale if scale > 0 else (0.0 if error == 0 else float("inf"))
    return max_rel, min(cosines)


def _within(max_rel: float, cosine: float, tol: LayerTolerance) -> bool:
    if tol.max_rel is not None and not max_rel <= tol.max_rel:
        return False
    return tol.min_cosine is None or cosine >= tol.min_cosine


def severity(max_rel: float, cosine: float, tol: LayerTolerance) -> float:
    """The error as a share of the tolerance's allowed deviation, the worse of max_rel and
    1 - cosine (0 when the tolerance checks nothing)."""
    shares = [0.0]
    if tol.max_rel is not None:
        shares.append(max_rel / tol.max_rel if tol.max_rel > 0 else
                      (0.0 if max_rel == 0 else float("inf")))
    if tol.min_cosine is not None:
        allowed = 1 - tol.min_cosine
        shares.append((1 - cosine) / allowed if allowed > 0 else
                      (0.0 if cosine >= 1 else float("inf")))
    return max(shares)


#: a layer after a candidate cause still carries its divergence while its severity is over
#: DRIFT_RATIO times the worst severity among the candidate's inputs, and over DRIFT_FLOOR
#: (measured on an int8 MobileNetV3-Small: absorbed squeeze-excite noise falls back to
#: 1.2x its inputs' error within two layers; a negated squeeze conv's effect stays 4-10x)
DRIFT_RATIO = 2.0
DRIFT_FLOOR = 0.1


#: ONNX op types that carry a layer's weights: a fused kernel is named after its weighted op
#: (the conv a ReLU6 was fused into), as the runtimes name their fused kernels
WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "QLinearConv",
                          "QLinearMatMul", "ConvInteger", "MatMulInteger"})


def _named_after(group: list[Layer]) -> Layer:
    weighted = [layer for layer in group if layer.op_type in WEIGHTED_OPS]
    return weighted[0] if weighted else group[-1]


def compare_layers(layer_map: LayerMap, reference: Mapping[str, np.ndarray],
                   target: Mapping[str, tuple[str, np.ndarray]],
                   tol: LayerTolerance) -> tuple[list[LayerError], list[dict[str, str]]]:
    """Errors of the layers both sides hold, in graph order, and the layers not compared.

    ``reference``: FX node -> value; ``target``: ONNX tensor -> (target tensor name, value in
    the reference's layout). A layer the target has no tensor for (a conv fused with its
    activation, a reshape folded away) is computed inside the next compared layer it feeds:
    that layer is named after the group's weighted op and lists the others in ``fused_with``."""
    fed_by: dict[str, list[str]] = {name: [] for name in layer_map.graph_inputs}
    pending: dict[str, list[Layer]] = {name: [] for name in layer_map.graph_inputs}
    errors: list[LayerError] = []
    skipped: list[dict[str, str]] = []
    by_name: dict[str, LayerError] = {}
    for layer in layer_map.layers:
        sources: list[str] = []
        inside: list[Layer] = []
        for name in layer.inputs:
            for source in ([name] if name in by_name else fed_by.get(name, [])):
                if source not in sources:
                    sources.append(source)
            for folded in ([] if name in by_name else pending.get(name, [])):
                if folded not in inside:
                    inside.append(folded)
        ref = reference.get(layer.fx_node)
        found = target.get(layer.tensor)
        reason = ("the reference program has no value for it" if ref is None else
                  "the target has no tensor of its own for it (computed inside a fused "
                  "kernel, or folded away)" if found is None else None)
        if reason is None and tuple(found[1].shape) != tuple(ref.shape):
            reason = f"shapes differ: target {list(found[1].shape)}, reference {list(ref.shape)}"
        if reason is not None:
            fed_by[layer.tensor] = sources
            pending[layer.tensor] = inside + [layer]
            skipped.append({"torch_module": label(layer), "onnx_tensor": layer.tensor,
                            "reason": reason})
            continue
        group = inside + [layer]
        named = _named_after(group)
        max_rel, cosine = layer_metrics(ref, found[1])
        entry = LayerError(label(named), named.fx_node, named.onnx_node, layer.tensor, found[0],
                           [label(other) for other in group if other is not named],
                           max_rel, cosine, _within(max_rel, cosine, tol), sources,
                           severity=severity(max_rel, cosine, tol))
        entry.added = max_rel - max((by_name[s].max_rel for s in sources), default=0.0)
        by_name[layer.tensor] = entry
        errors.append(entry)
    return errors, skipped


def _consumers(errors: list[LayerError]) -> dict[str, list[str]]:
    readers: dict[str, list[str]] = {e.onnx_tensor: [] for e in errors}
    for entry in errors:
        for source in entry.inputs:
            readers.setdefault(source, []).append(entry.onnx_tensor)
    return readers


def _carried(errors: list[LayerError], at: int, by_name: Mapping[str, LayerError],
             readers: Mapping[str, list[str]]) -> bool:
    """Whether ``errors[at]``'s error reaches a last layer over the tolerance through layers
    that stay drifting (severity over the threshold set by its inputs)."""
    start = errors[at]
    threshold = max(DRIFT_FLOOR, DRIFT_RATIO * max(
        (by_name[s].severity for s in start.inputs), default=0.0))
    reaches: set[str] = set()
    for entry in reversed(errors[at:]):     # graph order reversed: consumers come first
        after = readers[entry.onnx_tensor]
        if entry is not start and not entry.severity > threshold:
            continue
        if any(r in reaches for r in after) if after else not entry.within:
            reaches.add(entry.onnx_tensor)
    return start.onnx_tensor in reaches


def divergences(errors: list[LayerError]) -> tuple[list[LayerError], list[LayerError]]:
    """The layers over the tolerance whose inputs are all within it, split in graph order
    into those whose error is carried on to the output and the transient ones."""
    by_name = {e.onnx_tensor: e for e in errors}
    readers = _consumers(errors)
    carried: list[LayerError] = []
    absorbed: list[LayerError] = []
    for at, entry in enumerate(errors):
        if entry.within or not all(by_name[s].within for s in entry.inputs):
            continue
        (carried if _carried(errors, at, by_name, readers) else absorbed).append(entry)
    return carried, absorbed


def first_divergent(errors: list[LayerError]) -> LayerError | None:
    """The first layer over its tolerance whose inputs are all within it and whose error is
    carried on to the output."""
    carried, _ = divergences(errors)
    return carried[0] if carried else None


def transient(errors: list[LayerError]) -> list[LayerError]:
    """Layers over the tolerance, their inputs within it, whose error the layers after them
    absorb."""
    return divergences(errors)[1]


def _json_number(value: float) -> float | None:
    return round(value, 9) if np.isfinite(value) else None


def _entry(e: LayerError, tol: LayerTolerance | None = None) -> dict[str, Any]:
    data = {k: v for k, v in asdict(e).items() if k not in ("within", "inputs", "max_rel",
                                                             "cosine", "added", "severity")}
    data["error"] = {"max_rel": _json_number(e.max_rel), "cosine": _json_number(e.cosine),
                     "added": _json_number(e.added)}
    if tol is not None:
        data["limit"] = tol.model_dump()
    return data


def localisation_record(errors: list[LayerError], skipped: list[dict[str, str]],
                        tol: LayerTolerance, precision: str) -> dict[str, Any]:
    """The ``localisation`` entry of a report node (and of ``localise --json``)."""
    carried, absorbed = divergences(errors)
    first = carried[0] if carried else None
    top = sorted(errors, key=lambda e: -e.added if np.isfinite(e.added) else float("-inf"))
    return {"precision": precision, "limit": tol.model_dump(), "compared": len(errors),
            "first_divergent": _entry(first, tol) if first else None,
            "transient": [_entry(e, tol) for e in absorbed[:TOP]],
            "top": [_entry(e) for e in top[:TOP]],
            "curve": [{"torch_module": e.torch_module, "onnx_tensor": e.onnx_tensor,
                       "target_tensor": e.target_tensor,
                       "max_rel": _json_number(e.max_rel), "cosine": _json_number(e.cosine)}
                      for e in errors],
            "not_compared": skipped}
