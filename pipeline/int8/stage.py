"""The QDQ int8 stage both ONNX-consuming targets build on: one calibration, one recipe.

A subclass names its node, output, file and activation encoding: ``onnx:int8`` (uint8
activations, ONNX Runtime's fast x86 path; targets.onnx) and ``tensorrt:qdq`` (int8 activations
with zero point 0, the only form TensorRT's explicit quantization takes; targets.tensorrt). Both
quantize the trunk's ONNX with ONNX Runtime's quantizer (pipeline.int8.qdq) from the run's one
calibration set, which is calibrated **once per run** for both (the activation ranges do not
depend on the encoding), and both are checked on ONNX Runtime, reached through targets.base.
When the all-int8 model fails its gates, the mixed-precision fallback (pipeline.int8.search)
keeps its most sensitive layers in float until the gates pass, and the record says which layers
and at what cost.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, ClassVar

from pipeline.artifact import Artifact
from pipeline.cache import canonical_json
from pipeline.calibration import calibration_identity, calibration_set
from pipeline.context import RunContext
from pipeline.graph import OutputFile, Stage, StageOutput
from pipeline.int8.qdq import (Calibrated, calibrate, layer_costs, onnx_candidates,
                               quantize_calibrated, rank_layers)
from pipeline.int8.search import fall_back
from pipeline.reference import Reference
from pipeline.verify import Checks, check_gates, check_node
from targets.base import file_runner


def shared_calibration(ctx: RunContext, onnx: Artifact, workdir: Path) -> Calibrated:
    """The calibrated graph of ``onnx`` for this run's calibration set and method, computed
    once per run (kept in the run context) and reused by every QDQ stage."""
    key = ("qdq-calibration", onnx.digest, ctx.config.quant.method,
           canonical_json(calibration_identity(ctx)))
    if key not in ctx.memo:
        ctx.memo[key] = calibrate(onnx.path, calibration_set(ctx).batch,
                                  ctx.config.quant.method, workdir)
    return ctx.memo[key]


class QdqQuantizeStage(Stage):
    """Quantize the trunk's ONNX to a QDQ graph, check it, fall back to mixed precision."""

    inputs = ("onnx", "reference")
    precision = "int8"
    #: activation encoding (pipeline.int8.qdq.ACTIVATIONS) and the artifact's file name
    activations: ClassVar[str]
    filename: ClassVar[str]

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx

    def config(self) -> dict[str, Any]:
        return {"quant": self.ctx.config.quant.model_dump(), "activations": self.activations,
                "calibration": calibration_identity(self.ctx),
                **self.ctx.measure_config("int8")}

    def run(self, inputs: dict[str, Artifact], workdir: Path) -> StageOutput:
        c = self.ctx.config
        calib = calibration_set(self.ctx)
        calibrated = shared_calibration(self.ctx, inputs["onnx"], workdir)
        path = workdir / self.filename
        info = quantize_calibrated(calibrated, path, c.quant.per_channel, self.activations)
        info["calibration_source"] = calib.source
        reference = Reference.load(inputs["reference"].path)
        checks = self._check(path, reference)
        warnings = list(calib.warnings)
        if checks.failed and c.quant.fallback:
            checks, info = self._fall_back(calibrated, path, reference, checks, info, workdir,
                                           warnings)
        record = checks.to_record()
        record["info"] = info
        if warnings:
            record["warnings"] = warnings
        return StageOutput({self.outputs[0]: OutputFile(path, "onnx", {"precision": "int8"})},
                           record)

    #: what the record says ran the checks and what its latency means, where not the obvious
    parity_runtime: ClassVar[str | None] = None
    latency_note: ClassVar[str | None] = None

    def _check(self, path: Path, reference: Reference) -> Checks:
        c = self.ctx.config
        checks = check_node(file_runner(path, c.threads), reference, self.ctx.tolerance("int8"),
                            c.bench, self.ctx.accuracy_drop("int8"))
        checks.parity.runtime = self.parity_runtime
        if self.latency_note is not None and checks.latency is not None:
            checks.latency["note"] = self.latency_note
        return checks

    def _fall_back(self, calibrated: Calibrated, path: Path, reference: Reference,
                   first: Checks, info: dict[str, Any], workdir: Path,
                   warnings: list[str]) -> tuple[Checks, dict[str, Any]]:
        """The fewest float layers that pass (pipeline.int8.search.fall_back), candidates
        re-quantized from the one calibration; returns the node's checks and facts."""
        c = self.ctx.config
        start = time.perf_counter()

        def gate(candidate: Path) -> Checks:
            return check_gates(file_runner(candidate, c.threads), reference,
                               self.ctx.tolerance("int8"), self.ctx.accuracy_drop("int8"))

        ranking = rank_layers(calibrated, path, reference, workdir / "mixed",
                              per_channel=c.quant.per_channel, activations=self.activations,
                              threads=c.threads)
        make = onnx_candidates(calibrated, workdir / "mixed", per_channel=c.quant.per_channel,
                               activations=self.activations)
        checks, summary, warning, chosen = fall_back(
            ranking, make, gate, first=first, path=path,
            recheck=lambda p: self._check(p, reference), costs=layer_costs(calibrated.model),
            cap=c.quant.max_float_layers, started=start)
        warnings.append(warning)
        return checks, {**info, **chosen, "mixed_precision": summary}
