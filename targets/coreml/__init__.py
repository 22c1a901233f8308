"""Core ML target: ML Program ``.mlpackage`` at fp32 / fp16 / int8, for iOS.

Conversion (coremltools 9) runs in an isolated child process (:mod:`targets.coreml.convert`)
from the trunk's fused torch.export program. Artifacts are stored as a deterministic archive of
the package's canonical form (:mod:`targets.coreml.mlpackage`) and published as
``artifacts/ios/<model>/Model_<precision>.mlpackage`` folders.

Verification:

* on macOS, Core ML itself (``MLModel.predict``) with compute units ``CPU_ONLY`` and ``ALL``
  checks parity and measures latency;
* elsewhere, Core ML's runtime does not exist: parity is checked by the MIL reference evaluator
  (:mod:`targets.coreml.mil`, the program executed op by op on PyTorch CPU kernels), labelled
  as such, and latency is ``unverified: Core ML runtime requires macOS`` (the evaluator's own
  timing is recorded under ``latency.evaluator`` for information only). A program with an op the
  evaluator does not implement gets parity ``unverified`` naming the op, never ``pass``.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from targets.base import Runner, Target, register
from targets.coreml.runner import (ON_MACOS, RUNTIME_PREFIX, CoremlRuntimeRunner,
                                   MilEvaluatorRunner)

DEPLOYMENT_TARGETS = ("iOS15", "iOS16", "iOS17", "iOS18")
INPUT_TYPES = ("tensor", "image")


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
        """Conversion options: what the run config's ``coreml`` section and ``labels`` set,
        else this target's own settings."""
        from pipeline.labels import explicit_labels

        section = ctx.config.coreml
        chosen = section.model_fields_set

        def get(key: str, default: Any) -> Any:
            return getattr(section, key) if key in chosen else default

        labels = explicit_labels(ctx.config) if ctx.config.labels is not None \
            else self.class_labels
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
        from targets.coreml.stage import ConvertCoremlStage

        return [ConvertCoremlStage(ctx, p, options) for p in self.precisions if p in precisions]

    def runner(self, path: Path, threads: int) -> Runner:
        if ON_MACOS:  # pragma: no cover - macOS only
            return CoremlRuntimeRunner(path, threads, "CPU_ONLY")
        return MilEvaluatorRunner(path, threads)

    def publish_name(self, output: str, precision: str, suffix: str) -> str:
        return f"Model_{precision}.mlpackage"

    def publish_artifact(self, src: Path, dst: Path) -> None:
        """The cache holds a package as a deterministic archive (targets.coreml.mlpackage); it
        is published as the folder Xcode expects, ``<name>.mlpackage/``: extracted into a temp
        folder beside the destination, then renamed into place (an existing package is moved
        aside first and deleted after)."""
        import shutil

        from pipeline.files import temp_dir
        from targets.coreml import mlpackage

        tmp = temp_dir(dst.parent, dst.name)
        try:
            staged = mlpackage.unpack(src, tmp / dst.name)
            mlpackage.replace_dir(staged, dst)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def checked_on(self, node: dict) -> tuple[str, bool]:
        """Off macOS a package is checked by the MIL reference evaluator: a proxy."""
        runtime, _ = super().checked_on(node)
        return runtime, not runtime.startswith(RUNTIME_PREFIX)

    def artifact_digest(self, path: Path) -> str:
        """A package's canonical digest (its manifest's paths checked before reading)."""
        from targets.coreml import mlpackage

        return mlpackage.artifact_digest(path)

    def join_tensors(self, tensors, layers, info):
        names = self._names(list(tensors), layers)
        return {onnx: (var, tensors[var]) for onnx, var in names.items()}

    def tensor_names(self, path, layers, info):
        from targets.coreml import mlpackage
        from targets.coreml.mil import MilEvaluator

        with mlpackage.opened(Path(path)) as folder:
            evaluator = MilEvaluator(folder)
            return self._names([var for op in evaluator.ops for var, _ in op.outputs], layers)

    @staticmethod
    def _names(variables: list[str], layers: Any) -> dict[str, str]:
        """The torch frontend names each MIL variable after the FX node it translates (of the
        fused program, not decomposed: ``adaptive_avg_pool2d`` where the exporter's is
        ``mean``, which then has no join); a precision pass appends ``_cast_fp16`` to the ones
        it recomputes in fp16; the program's outputs carry the model's output names, as in the
        ONNX graph."""
        import re

        by_fx, by_tensor = layers.by_fx_node(), layers.by_tensor()
        joined: dict[str, str] = {}
        for var in variables:
            layer = by_fx.get(var) or by_fx.get(re.sub(r"_cast_fp(16|32)$", "", var)) \
                or by_tensor.get(var)
            if layer is not None:
                joined.setdefault(layer.tensor, var)
        return joined
