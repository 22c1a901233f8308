"""Core ML target: ML Program ``.mlpackage`` at fp32 / fp16 / int8, for iOS.

Conversion (coremltools 9) runs in an isolated child process (:mod:`pipeline.coreml_convert`)
from the trunk's fused torch.export program. Artifacts are stored as a deterministic archive of
the package's canonical form (:mod:`pipeline.mlpackage`) and published as
``artifacts/ios/<model>/Model_<precision>.mlpackage`` folders.

Verification:

* on macOS, Core ML itself (``MLModel.predict``) with compute units ``CPU_ONLY`` and ``ALL``
  checks parity and measures latency;
* elsewhere, Core ML's runtime does not exist: parity is checked by the MIL reference evaluator
  (:mod:`pipeline.mil_evaluator`, the program executed op by op on PyTorch CPU kernels), labelled
  as such, and latency is ``unverified: Core ML runtime requires macOS`` (the evaluator's own
  timing is recorded under ``latency.evaluator`` for information only). A program with an op the
  evaluator does not implement gets parity ``unverified`` naming the op, never ``pass``.
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import StageError
from pipeline.graph import OutputFile, Stage, StageOutput
from targets.base import Runner, Target, register

ON_MACOS = sys.platform == "darwin"
NOT_MACOS = "Core ML runtime requires macOS"
DEPLOYMENT_TARGETS = ("iOS15", "iOS16", "iOS17", "iOS18")
INPUT_TYPES = ("tensor", "image")
PREPROCESSING_KEY = "com.mobile-export.preprocessing"


def _preprocessing(spec: Any) -> tuple[bool, np.ndarray | None, np.ndarray | None]:
    """(image input?, mean, std) from a package's spec (as written by the converter)."""
    image = spec.description.input[0].type.WhichOneof("Type") == "imageType"
    meta = spec.description.metadata.userDefined.get(PREPROCESSING_KEY)
    if not meta:
        return image, None, None
    values = json.loads(meta)
    return (image, np.asarray(values["mean"], np.float32).reshape(1, 3, 1, 1),
            np.asarray(values["std"], np.float32).reshape(1, 3, 1, 1))


def class_labels(spec: Any) -> list[str] | None:
    """The labels of a Core ML classifier (from its ``classify`` op), in score order."""
    if spec.WhichOneof("Type") != "mlProgram" or "main" not in spec.mlProgram.functions:
        return None
    function = spec.mlProgram.functions["main"]
    for op in function.block_specializations[function.opset].operations:
        if op.type == "classify":
            for binding in op.inputs["classes"].arguments:
                if binding.WhichOneof("binding") == "value":
                    return [item.immediateValue.tensor.strings.values[0]
                            for item in binding.value.immediateValue.list.values]
    return None


def to_pixels(batch: np.ndarray, mean: np.ndarray | None, std: np.ndarray | None) -> np.ndarray:
    """Normalised NCHW inputs -> the 0..255 RGB pixel values an ImageType input takes."""
    if mean is None or std is None:
        raise ValueError(f"the package has an image input but no {PREPROCESSING_KEY} metadata; "
                         "cannot turn normalised parity inputs into pixels")
    return ((batch * std + mean) * 255.0).astype(np.float32)


class MilEvaluatorRunner(Runner):
    """Runs a package (folder or archive) on the MIL reference evaluator, one sample at a time
    (the program has a fixed batch of 1)."""

    runtime = "mil-reference-evaluator"

    def __init__(self, path: Path, threads: int = 1) -> None:
        super().__init__(threads)
        self.path = Path(path)
        self.evaluator = None
        self._stack: contextlib.ExitStack | None = None
        self._saved_threads = 0

    def activate_impl(self) -> None:
        import torch

        from pipeline import mlpackage
        from pipeline.mil_evaluator import MilEvaluator

        self._stack = contextlib.ExitStack()
        try:
            folder = self._stack.enter_context(mlpackage.opened(self.path))
            self.evaluator = MilEvaluator(folder)
        except BaseException:
            self._stack.close()
            raise
        self._image, self._mean, self._std = _preprocessing(self.evaluator.spec)
        self._saved_threads = torch.get_num_threads()
        torch.set_num_threads(self.threads)

    def deactivate_impl(self) -> None:
        import torch

        torch.set_num_threads(self._saved_threads)
        if self._stack is not None:
            self._stack.close()
        self._stack = None

    @property
    def unsupported_ops(self) -> list[str]:
        return self.evaluator.unsupported_ops if self.evaluator is not None else []

    def input_names_impl(self) -> list[str]:
        return [name for name, _, _ in self.evaluator.inputs]

    def infer_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        (name, array), = feeds.items()
        array = np.asarray(array, dtype=np.float32)
        if self._image:
            array = to_pixels(array, self._mean, self._std)
        outputs: dict[str, list[np.ndarray]] = {}
        for sample in array:
            for key, value in self.evaluator.run({name: sample[None]}).items():
                if value.dtype.kind in "fiub":   # a classifier's label (a string) is not compared
                    outputs.setdefault(key, []).append(value.astype(np.float32))
        return {key: np.concatenate(values, axis=0) for key, values in outputs.items()}


class CoremlRuntimeRunner(Runner):
    """``MLModel.predict`` on macOS with the given compute units (``CPU_ONLY``, ``ALL``, ...)."""

    runtime = "coreml"

    def __init__(self, path: Path, threads: int = 1, compute_units: str = "CPU_ONLY") -> None:
        super().__init__(threads)
        self.path = Path(path)
        self.compute_units = compute_units
        self.runtime = f"coreml-{compute_units.lower()}"
        self._stack: contextlib.ExitStack | None = None
        self._model = None

    def activate_impl(self) -> None:  # pragma: no cover - macOS only
        import coremltools as ct

        from pipeline import mlpackage

        self._stack = contextlib.ExitStack()
        folder = self._stack.enter_context(mlpackage.opened(self.path))
        spec, _ = mlpackage.load_spec(folder)
        self._image, self._mean, self._std = _preprocessing(spec)
        self._input = spec.description.input[0].name
        self._outputs = [o.name for o in spec.description.output
                         if o.type.WhichOneof("Type") != "stringType"]
        self._labels = class_labels(spec)
        self._model = ct.models.MLModel(str(folder),
                                        compute_units=getattr(ct.ComputeUnit, self.compute_units))

    def deactivate_impl(self) -> None:  # pragma: no cover - macOS only
        self._model = None
        if self._stack is not None:
            self._stack.close()
        self._stack = None

    def input_names_impl(self) -> list[str]:  # pragma: no cover - macOS only
        return [self._input]

    def infer_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:  # pragma: no cover
        from PIL import Image

        (array,) = feeds.values()
        array = np.asarray(array, dtype=np.float32)
        if self._image:  # Core ML takes 8-bit pixels: rounding here is part of what ships
            pixels = np.clip(np.rint(to_pixels(array, self._mean, self._std)), 0, 255)
            samples = [{self._input: Image.fromarray(p.transpose(1, 2, 0).astype(np.uint8))}
                       for p in pixels]
        else:
            samples = [{self._input: sample[None]} for sample in array]
        results = self._model.predict(samples) if len(samples) > 1 else [self._model.predict(samples[0])]
        outputs: dict[str, list[np.ndarray]] = {}
        for result in results:
            for key in self._outputs:
                value = result[key]
                if isinstance(value, dict):   # a classifier's scores: label -> score
                    value = np.asarray([[value[label] for label in (self._labels or value)]],
                                       dtype=np.float32)
                outputs.setdefault(key, []).append(np.asarray(value, dtype=np.float32))
        return {key: np.concatenate(values, axis=0) for key, values in outputs.items()}


def _unverified_latency(threads: int, reason: str = NOT_MACOS) -> dict[str, Any]:
    return {"runtime": "coreml", "median_ms": None, "p90_ms": None, "min_ms": None, "runs": 0,
            "threads": threads, "verdict": "unverified", "reason": reason}


def verify_package(path: Path, reference: Any, tol: Any, bench: Any, threads: int,
                   time_evaluator: bool = True) -> dict[str, Any]:
    """The node record (parity, latency) of one package (folder or archive)."""
    from pipeline.mil_evaluator import LABEL
    from pipeline.parity import compare_outputs, judge, run_outputs, unverified
    from pipeline.verify import check_node, latency_record

    if ON_MACOS:  # pragma: no cover - macOS only
        cpu = check_node(CoremlRuntimeRunner(path, threads, "CPU_ONLY"), reference, tol, bench)
        every = check_node(CoremlRuntimeRunner(path, threads, "ALL"), reference, tol, bench)
        parity = dict(cpu["parity"])
        parity["runtime"] = "Core ML (MLModel.predict), compute units CPU_ONLY and ALL"
        if every["parity"]["verdict"] != "pass":
            parity["verdict"] = every["parity"]["verdict"]
            parity["failures"] = parity.get("failures", []) + [
                f"compute units ALL: {f}" for f in every["parity"].get("failures", [])]
            parity["reason"] = f"compute units ALL: {every['parity']['reason']}"
        latency = dict(every["latency"])
        latency["compute_units"] = {"ALL": every["latency"], "CPU_ONLY": cpu["latency"]}
        return {"parity": parity, "latency": latency,
                "compute_units": {"CPU_ONLY": cpu["parity"], "ALL": every["parity"]}}
    runner = MilEvaluatorRunner(path, threads)
    with runner:
        if runner.unsupported_ops:
            result = unverified(f"the {LABEL} does not implement MIL op(s) "
                                f"{', '.join(runner.unsupported_ops)}; parity not checked")
        else:
            outputs = run_outputs(runner, reference.inputs)
            result = judge(compare_outputs(reference.outputs, outputs), tol, len(reference.inputs))
            result.reason = f"{LABEL}: {result.reason}"
        latency = _unverified_latency(threads)
        if time_evaluator and not runner.unsupported_ops:
            timing = latency_record(runner, reference, bench)
            timing["note"] = f"{LABEL} on PyTorch CPU; says nothing about Core ML latency"
            latency["evaluator"] = timing
    parity = result.to_json()
    parity["runtime"] = LABEL
    return {"parity": parity, "latency": latency}


class ConvertCoremlStage(Stage):
    """One precision of the Core ML target: convert, then verify (see the module doc)."""

    stage = "convert_coreml"
    version = 1
    tools = ("torch", "coremltools", "numpy", "protobuf")
    inputs = ("fused_program", "reference")
    target = "coreml"

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
        from pipeline.mil_evaluator import LABEL

        config = {"model": self.ctx.model_identity, "precision": self.precision,
                  "options": self.options, "verified_on": "macos" if ON_MACOS else LABEL,
                  **self.ctx.measure_config(self.precision)}
        if self.precision == "int8" and self.options.get("int8_activations"):
            config["calibration"] = calibration_identity(self.ctx)
        return config

    def convert_kwargs(self, program: Path, out: Path, calib: Path | None = None) -> dict:
        """Keyword arguments of :func:`pipeline.coreml_convert.convert` for this node."""
        prep = self.ctx.source.preprocessing
        kwargs = {"program": str(program), "out": str(out), "precision": self.precision,
                  "resolution": self.ctx.config.resolution, "mean": list(prep.mean),
                  "std": list(prep.std), "model_name": self.ctx.source.label, **self.options}
        if calib is not None:
            kwargs["calib"] = str(calib)
        return kwargs

    def run(self, inputs: dict[str, Any], workdir: Path) -> StageOutput:
        from pipeline.calibration import calibration_batch
        from pipeline.isolate import IsolatedCallError, run_isolated
        from pipeline.reference import Reference

        c = self.ctx.config
        out = workdir / "Model.mlpackage.zip"
        calib = None
        if self.precision == "int8" and self.options.get("int8_activations"):
            calib = workdir / "calibration.npy"
            np.save(calib, calibration_batch(self.ctx))
        kwargs = self.convert_kwargs(inputs["fused_program"].path, out, calib)
        try:
            info = run_isolated("pipeline.coreml_convert:convert", kwargs, stage=self.name,
                                model=self.ctx.source.label, timeout_s=c.convert_timeout_s,
                                env={"PYTHONHASHSEED": "0"})
        except IsolatedCallError as exc:
            from pipeline.coreml_convert import _unsupported_op

            ops = [op for line in exc.tail if (op := _unsupported_op(line))]
            if ops:
                raise StageError(self.name, f"coremltools {_version('coremltools')} cannot "
                                 f"convert op '{ops[-1]}' of {self.ctx.source.label}; "
                                 "replace that op in the model or leave coreml out of "
                                 "--targets") from None
            raise
        reference = Reference.load(inputs["reference"].path)
        record = verify_package(out, reference, self.ctx.tolerance(self.precision), c.bench,
                                c.threads)
        info["verified_by"] = record["parity"]["runtime"]
        record["info"] = info
        meta = {"precision": self.precision, "deployment_target": info["deployment_target"]}
        return StageOutput({self.outputs[0]: OutputFile(out, "mlpackage", meta)}, record)



def _version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "(absent)"


@register
class CoremlTarget(Target):
    """ML Program ``.mlpackage`` for iOS. Options: minimum deployment target (iOS15–iOS18,
    default iOS17, the first with activation ``quantize``/``dequantize``; int8 needs iOS16+),
    input type (``tensor``: normalised fp32 NCHW; ``image``: RGB pixels with the model's mean/std
    folded into the ImageType's scale/bias), class labels (makes a Core ML classifier, when the
    labels are known), ``int8_activations`` (W8A8 instead of weight-only int8; iOS17+)."""

    name = "coreml"
    platform = "ios"
    precisions = ("fp32", "fp16", "int8")
    suffixes = (".mlpackage",)

    def __init__(self, deployment_target: str = "iOS17", input_type: str = "tensor",
                 class_labels: list[str] | None = None, int8_activations: bool = False) -> None:
        if deployment_target not in DEPLOYMENT_TARGETS:
            raise ValueError(f"deployment target {deployment_target!r}; use one of "
                             f"{', '.join(DEPLOYMENT_TARGETS)}")
        if input_type not in INPUT_TYPES:
            raise ValueError(f"input type {input_type!r}; use one of {', '.join(INPUT_TYPES)}")
        self.deployment_target = deployment_target
        self.input_type = input_type
        self.class_labels = list(class_labels) if class_labels else None
        self.int8_activations = bool(int8_activations)

    def unavailable_reason(self) -> str | None:
        if importlib.util.find_spec("coremltools") is None:
            return "coremltools is not installed; run `make setup`"
        return None

    def options(self, ctx: Any) -> dict[str, Any]:
        """Conversion options: a ``coreml`` section of the run config when it has one, else this
        target's own settings."""
        section = getattr(ctx.config, "coreml", None)
        get = (lambda key, default: getattr(section, key, default)) if section is not None \
            else (lambda key, default: default)
        labels = get("class_labels", self.class_labels)
        if labels and len(labels) != ctx.config.num_classes:
            from pipeline.errors import UserInputError

            raise UserInputError(f"{len(labels)} class labels for a model with "
                             f"{ctx.config.num_classes} classes")
        return {"deployment_target": get("deployment_target", self.deployment_target),
                "input_type": get("input_type", self.input_type),
                "class_labels": list(labels) if labels else None,
                "int8_activations": bool(get("int8_activations", self.int8_activations))}

    def stages(self, ctx, precisions):
        from pipeline.errors import UserInputError

        options = self.options(ctx)
        if "int8" in precisions and options["deployment_target"] == "iOS15":
            raise UserInputError("Core ML int8 needs iOS16 or later (its weights use the iOS16 "
                                 "constexpr ops); raise the deployment target or drop int8")
        if ("int8" in precisions and options["int8_activations"]
                and options["deployment_target"] in ("iOS15", "iOS16")):
            raise UserInputError("Core ML int8 activations (int8_activations) need iOS17 or later "
                                 "(quantize/dequantize ops); raise the deployment target or use "
                                 "weight-only int8")
        return [ConvertCoremlStage(ctx, p, options) for p in self.precisions if p in precisions]

    def runner(self, path: Path, threads: int) -> Runner:
        if ON_MACOS:  # pragma: no cover - macOS only
            return CoremlRuntimeRunner(path, threads, "CPU_ONLY")
        return MilEvaluatorRunner(path, threads)

    def publish_name(self, output: str, precision: str, suffix: str) -> str:
        return f"Model_{precision}.mlpackage"
