"""``coreml:<precision>``: convert the fused program in a child process, then verify the package
(MLModel.predict on macOS, the MIL reference evaluator elsewhere)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.errors import StageError
from pipeline.graph import OutputFile, Stage, StageOutput
from targets.coreml.runner import (ON_MACOS, RUNTIME_PREFIX, CoremlRuntimeRunner,
                                   MilEvaluatorRunner)

if TYPE_CHECKING:
    from pipeline.verify import Checks

NOT_MACOS = "Core ML runtime requires macOS"
#: what :meth:`ConvertCoremlStage.prepare` leaves in the work folder for its run
PREPARED = "prepared.json"
PACKAGE = "Model.mlpackage.zip"


def verify_package(path: Path, reference: Any, tol: Any, bench: Any, threads: int,
                   time_evaluator: bool = True,
                   compute_units: tuple[str, ...] = ("CPU_ONLY", "ALL")) -> Checks:
    """The checks (parity, latency) of one package (folder or archive); on macOS checked with
    each of ``compute_units``, the node failing if any of them fails."""
    from targets.coreml.mil import LABEL
    from pipeline.bench import unverified_latency
    from pipeline.parity import compare_outputs, judge, run_outputs, unverified
    from pipeline.verify import Checks, check_node, latency_record

    if ON_MACOS:  # pragma: no cover - macOS only
        per_unit = {unit: check_node(CoremlRuntimeRunner(path, threads, unit), reference, tol,
                                     bench) for unit in compute_units}
        first = per_unit[compute_units[0]]
        parity = first.parity.worst_of({f"compute units {unit}": checks.parity
                                        for unit, checks in per_unit.items()
                                        if unit != compute_units[0]})
        parity.runtime = (f"{RUNTIME_PREFIX}, compute units "
                          + " and ".join(compute_units))
        latency = dict(per_unit[compute_units[-1]].latency or {})
        latency["compute_units"] = {unit: checks.latency for unit, checks in per_unit.items()}
        return Checks(parity, first.accuracy, latency, per_unit=per_unit)
    runner = MilEvaluatorRunner(path, threads)
    with runner:
        if runner.unsupported_ops:
            result = unverified(f"the {LABEL} does not implement MIL op(s) "
                                f"{', '.join(runner.unsupported_ops)}; parity not checked")
        else:
            outputs = run_outputs(runner, reference.inputs)
            result = judge(compare_outputs(reference.outputs, outputs), tol, len(reference.inputs))
            result.reason = f"{LABEL}: {result.reason}"
        latency = unverified_latency("coreml", threads, NOT_MACOS)
        if time_evaluator and not runner.unsupported_ops:
            # batch 1 only: the evaluator runs a batch one image at a time (a fixed-batch
            # program), so a batch-8 "throughput" was 8 x this figure, and 6 s per node
            timing = latency_record(runner, reference, bench.model_copy(update={"batch": 1}))
            timing["note"] = f"{LABEL} on PyTorch CPU; says nothing about Core ML latency"
            latency["evaluator"] = timing
    result.runtime = LABEL
    return Checks(result, latency=latency)


class ConvertCoremlStage(Stage):
    """One precision of the Core ML target: convert, then verify (see the module doc)."""

    stage = "convert_coreml"
    #: 2: the MIL evaluator is timed at batch 1 only (no chunked batch-8 throughput)
    version = 2
    tools = ("torch", "coremltools", "numpy", "protobuf")
    inputs = ("fused_program", "reference")
    target = "coreml"
    prepares = True   # the conversion runs side by side with the other targets' (pipeline.prepare)

    def __init__(self, ctx: Any, precision: str, options: dict[str, Any]) -> None:
        self.ctx = ctx
        self.precision = precision
        self.options = options
        self.outputs = (f"coreml_{precision}",)

    @property
    def name(self) -> str:
        return f"coreml:{self.precision}"

    def config(self) -> dict[str, Any]:
        from pipeline.calibration import calibration_identity
        from targets.coreml.mil import LABEL

        config = {"model": self.ctx.model_identity, "precision": self.precision,
                  "options": self.options, "verified_on": "macos" if ON_MACOS else LABEL,
                  **self.ctx.measure_config(self.precision)}
        if ON_MACOS and self.ctx.config.coreml.compute_units != ("CPU_ONLY", "ALL"):
            config["compute_units"] = list(self.ctx.config.coreml.compute_units)
        if self.precision == "int8" and self.options.get("int8_activations"):
            config["calibration"] = calibration_identity(self.ctx)
        return config

    def convert_kwargs(self, program: Path, out: Path, calib: Path | None = None) -> dict:
        """Keyword arguments of :func:`targets.coreml.convert.convert` for this node."""
        prep = self.ctx.source.preprocessing
        kwargs = {"program": str(program), "out": str(out), "precision": self.precision,
                  "resolution": self.ctx.config.resolution, "mean": list(prep.mean),
                  "std": list(prep.std), "model_name": self.ctx.source.label, **self.options}
        if calib is not None:
            kwargs["calib"] = str(calib)
        return kwargs

    def prepare(self, inputs: dict[str, Any], workdir: Path) -> None:
        """Convert in a child process; its facts go to ``prepared.json`` for :meth:`run`."""
        from pipeline.calibration import calibration_batch
        from pipeline.isolate import IsolatedCallError, run_isolated

        c = self.ctx.config
        out = workdir / PACKAGE
        calib = None
        if self.precision == "int8" and self.options.get("int8_activations"):
            calib = workdir / "calibration.npy"
            np.save(calib, calibration_batch(self.ctx))
        kwargs = self.convert_kwargs(inputs["fused_program"].path, out, calib)
        try:
            from targets.coreml import convert

            info = run_isolated(f"{convert.__name__}:convert", kwargs, stage=self.name,
                                model=self.ctx.source.label, timeout_s=c.convert_timeout_s,
                                env={"PYTHONHASHSEED": "0"})
        except IsolatedCallError as exc:
            error = exc.error or {}
            if error.get("type") == "UnsupportedOpError":
                raise StageError(self.name, f"coremltools {_version('coremltools')} cannot "
                                 f"convert op '{error['message']}' of "
                                 f"{self.ctx.source.label}; replace that op in the model or "
                                 "leave coreml out of --targets") from None
            raise
        (workdir / PREPARED).write_text(json.dumps(info))

    def run(self, inputs: dict[str, Any], workdir: Path) -> StageOutput:
        from pipeline.reference import Reference

        c = self.ctx.config
        if not (workdir / PREPARED).is_file():
            self.prepare(inputs, workdir)
        info = json.loads((workdir / PREPARED).read_text())
        out = workdir / PACKAGE
        reference = Reference.load(inputs["reference"].path)
        checks = verify_package(out, reference, self.ctx.tolerance(self.precision), c.bench,
                                c.threads, compute_units=c.coreml.compute_units)
        info["verified_by"] = checks.parity.runtime
        record = checks.to_record()
        record["info"] = info
        meta = {"precision": self.precision, "deployment_target": info["deployment_target"]}
        return StageOutput({self.outputs[0]: OutputFile(out, "mlpackage", meta)}, record)



def _version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "(absent)"
