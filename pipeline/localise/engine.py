"""One localisation, in the child process: reference values, the artifact's tensors, verdict.

Runs inside :func:`pipeline.isolate.run_isolated` (a runtime's native code may crash on a
hostile artifact); every path it gets was resolved by :mod:`pipeline.localise.locate`.
"""
from __future__ import annotations

import resource
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.cache import Cache
from pipeline.errors import UserInputError
from pipeline.localise.layer_map import LayerMap
from pipeline.localise.locate import cached_object
from pipeline.localise.reference_values import capture_values
from pipeline.localise.tolerance import LayerTolerance
from pipeline.localise.verdict import compare_layers, localisation_record
from pipeline.reference import Reference
from pipeline.verify_artifact import runtime_errors_as_user_input
from targets.base import IntermediatesUnavailable, registered_targets, target_for_file

#: samples compared per layer: real images first (random inputs are not what int8 is judged on)
SAMPLES = 8


def pick_samples(reference: Reference, limit: int = SAMPLES) -> np.ndarray:
    """Up to ``limit`` of the run's parity inputs, real images (photos, calibration, eval)
    before random ones."""
    batch, kinds = reference.inputs.batch, reference.inputs.kinds
    real = [i for i, kind in enumerate(kinds) if kind != "random"]
    chosen = (real or list(range(len(kinds))))[:limit]
    if reference.evaluation is not None and len(chosen) < limit:
        extra = reference.evaluation.inputs[: limit - len(chosen)]
        return np.concatenate([batch[chosen], extra]).astype(np.float32)
    return batch[chosen]


def localise_in_child(artifact: str, program: str, layer_map: str, reference: str,
                      precision: str, tolerance: dict[str, Any], info: dict[str, Any],
                      threads: int = 1, target: str | None = None,
                      cache_dir: str | None = None, stage: str | None = None) -> dict[str, Any]:
    """The ``localisation`` record of ``artifact`` (the child process's half)."""
    started = time.perf_counter()
    path = Path(artifact)
    # a run's own artifact may be a cache object (no suffix): its node names the target
    runtime_target = (registered_targets()[target]().runtime_target_for({"stage": stage})
                      if target else target_for_file(path))
    reason = runtime_target.unavailable_reason()
    if reason:
        raise UserInputError(f"cannot run {path.name} here: {reason}")
    layers = LayerMap.load(Path(layer_map))
    tol = LayerTolerance.model_validate(tolerance)
    batch = pick_samples(Reference.load(Path(reference)))
    ref_values = capture_values(Path(program), batch, {layer.fx_node for layer in layers.layers})
    reference_s = time.perf_counter() - started
    cache = Cache(Path(cache_dir)) if cache_dir else None

    def source(digest: str) -> Path:          # an engine's source ONNX, from the run's cache
        if cache is None:
            raise UserInputError("the run's cache folder is not known; rerun the pipeline")
        return cached_object(cache, digest, "onnx", "engine's source ONNX")

    try:
        with runtime_errors_as_user_input(path):
            with runtime_target.intermediates_runner(path, threads, info, source) as runner:
                values = runner.tensors({runner.input_names()[0]: batch})
                runtime = runner.runtime
        joined = runtime_target.join_tensors(values, layers, info)
    except IntermediatesUnavailable as exc:
        raise UserInputError(f"{path.name}: {exc}") from None
    errors, skipped = compare_layers(layers, ref_values, joined, tol)
    record = localisation_record(errors, skipped, tol, precision)
    record.update(runtime=runtime, samples=int(len(batch)), target_tensors=len(values),
                  seconds={"reference": round(reference_s, 3),
                           "total": round(time.perf_counter() - started, 3)},
                  peak_rss_mib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1))
    return record
