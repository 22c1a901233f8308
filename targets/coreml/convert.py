"""Core ML conversion, run in an isolated child process (``pipeline.isolate.run_isolated``).

coremltools imports TensorFlow when it is imported (about 2.7 GB peak with a conversion), and its
converter can abort the interpreter; so this module is only ever imported in the child.
Keyword arguments and the result are JSON.

Path: the trunk's *fused* torch.export program (BatchNorm already folded and verified), lowered
with ``ExportedProgram.run_decompositions({})`` — coremltools' torch.export frontend reads the
ATen inference dialect, while ``torch.export.export`` now returns the training IR (ops such as
``aten.conv2d`` with functional BatchNorm). The fused program rather than the traced one: it is
the graph every other target starts from, and it already passed its own parity gate.

Precisions: ``fp32`` and ``fp16`` are coremltools' compute precisions (fp16 adds ``cast`` ops
around an fp16 program; inputs and outputs are kept fp32). ``int8`` starts from the fp16 program:

* weights: ``coremltools.optimize.coreml.linear_quantize_weights``, int8, symmetric, per output
  channel, every weight tensor with more than ``WEIGHT_THRESHOLD`` elements
  (``constexpr_affine_dequantize``; ``constexpr_blockwise_shift_scale`` for iOS18);
* activations, only with ``int8_activations=True`` (opt-in, W8A8) and a minimum deployment
  target of iOS17 or later (the first with ``quantize``/``dequantize``): coremltools' own
  activation passes (``compression::insert_prefix/suffix_quantize_dequantize_pair``) fed with
  per-tensor ranges **measured by the MIL reference evaluator** on the pipeline's calibration
  set, because coremltools' own calibration calls ``MLModel.predict``, which needs macOS.
  Opt-in because per-tensor activations cost too much on small depthwise networks: on the
  digits-trained MobileNetV2 0.35 (64 px) W8A8 measured centred cosine 0.924 / top-1 97.2 %
  (gate 0.99 / 95 %), weight-only int8 0.9989 / 100 %.
"""
from __future__ import annotations

import json
import re
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from targets.coreml.runner import PREPROCESSING_KEY

DEPLOYMENT_TARGETS = ("iOS15", "iOS16", "iOS17", "iOS18")
INPUT_NAME = "input"
OUTPUT_NAME = "output"
#: weight tensors with fewer elements stay float (coremltools' default is 2048)
WEIGHT_THRESHOLD = 512
#: activation quantization mode (per tensor). On the digits-trained MobileNetV2 0.35 the
#: evaluator measured centred cosine 0.924 with "linear_symmetric" and 0.915 with "linear".
ACTIVATION_MODE = "linear_symmetric"


def _load_program(program_path: str, image_input: bool, mean, std, resolution: int):
    """The fused program, lowered to the ATen inference dialect (wrapped with per-channel
    normalisation first when the input is an image whose std is not one scalar)."""
    from pipeline.program import load_program, no_stack_traces

    with no_stack_traces():
        return _lowered(load_program(Path(program_path)), image_input, std, resolution)


def _lowered(program: Any, image_input: bool, std, resolution: int):
    """``program`` (wrapped as :func:`_load_program` says) in the ATen inference dialect."""
    import torch

    wrapped = False
    if image_input and len(set(std)) > 1:
        inner = program.module()

        class _Normalise(torch.nn.Module):
            """ImageType's scale is one scalar: divide by the per-channel std here."""

            def __init__(self) -> None:
                super().__init__()
                self.inner = inner
                self.register_buffer("inv_std", torch.tensor([1.0 / s for s in std]).reshape(
                    1, 3, 1, 1))

            def forward(self, x):
                return self.inner(x * self.inv_std)

        example = torch.zeros(1, 3, resolution, resolution)
        program = torch.export.export(_Normalise(), (example,))
        wrapped = True
    return program.run_decompositions({}), wrapped


def _input_type(ct, image_input: bool, mean, std, resolution: int):
    shape = (1, 3, resolution, resolution)
    if not image_input:
        return ct.TensorType(name=INPUT_NAME, shape=shape, dtype=np.float32), {"input": "TensorType fp32 NCHW, "
                                                             "normalised as the model declares"}
    if len(set(std)) == 1:
        scale, bias = 1.0 / (255.0 * std[0]), [-m / std[0] for m in mean]
        how = "mean and std folded into ImageType scale/bias"
    else:
        scale, bias = 1.0 / 255.0, [-m for m in mean]
        how = ("mean folded into ImageType bias; per-channel 1/std is one mul op in the program "
               "(ImageType's scale is a single scalar)")
    image = ct.ImageType(name=INPUT_NAME, shape=shape, scale=scale, bias=bias,
                         color_layout=ct.colorlayout.RGB, channel_first=True)
    return image, {"input": f"ImageType RGB {resolution}x{resolution}, pixels 0..255; {how}",
                   "image_scale": scale, "image_bias": bias}


class UnsupportedOpError(RuntimeError):
    """coremltools has no conversion for an op of the model; ``str()`` is the op's name. It
    reaches the parent as the child's structured error (pipeline.isolate)."""


def unsupported_op(exc: BaseException | str) -> str | None:
    """The op named by a coremltools "cannot convert" error."""
    text = str(exc)
    for pattern in (r"convert function for op '([^']+)' not implemented",
                    r"Unsupported fx node \S+, kind (\S+)",
                    r"[Oo]p '([^']+)' (?:is )?not (?:implemented|supported)"):
        match = re.search(pattern, text)
        if match:
            return match.group(1)
    return None


def _activation_stats(package: Path, calib: np.ndarray) -> tuple[dict, list]:
    """Per-tensor min/max of every activation over the calibration set, measured with the MIL
    reference evaluator (``calib`` holds what the program's input takes), and the concat groups
    whose ranges coremltools unifies."""
    import torch

    from targets.coreml.mil import MilEvaluator

    evaluator = MilEvaluator(package)
    if evaluator.unsupported_ops:
        raise RuntimeError(f"activation calibration needs the MIL reference evaluator, which does "
                           f"not implement {evaluator.unsupported_ops}")
    stats: dict[str, dict[str, float]] = defaultdict(dict)

    def observe(name: str, _op: str, value: torch.Tensor) -> None:
        if not value.is_floating_point():
            return
        low, high = float(value.min()), float(value.max())
        entry = stats[name]
        entry["rmin"] = min(low, entry.get("rmin", low))
        entry["rmax"] = max(high, entry.get("rmax", high))

    (input_name, _, _), = evaluator.inputs
    for sample in calib:
        feed = np.ascontiguousarray(sample[None], dtype=np.float32)
        observe(input_name, "input", torch.from_numpy(feed))
        evaluator.run({input_name: feed}, observe=observe)
    for name in evaluator.output_names:
        stats.pop(name, None)
    concat_groups = [[ref for kind, ref in op.inputs["values"] if kind == "name"] + [op.outputs[0][0]]
                     for op in evaluator.ops if op.type == "concat"]
    return dict(stats), concat_groups


def _quantize_activations(mlmodel, stats: dict, concat_groups: list, ct):
    """coremltools' activation-quantization passes, fed with our calibration statistics."""
    import coremltools.optimize as cto
    from coremltools import _SPECIFICATION_VERSION_IOS_17
    from coremltools.converters.mil.frontend.milproto import load as milproto_to_pymil
    from coremltools.converters.mil.mil.passes.graph_pass import PassOption
    from coremltools.converters.mil.mil.passes.pass_registry import PASS_REGISTRY
    from coremltools.models import utils as model_utils
    from coremltools.optimize.coreml.experimental._post_training_quantization import \
        _adjust_concat_surrounding_activation_stats

    _adjust_concat_surrounding_activation_stats(concat_groups or None, stats)
    config = cto.coreml.OptimizationConfig(
        global_config=cto.coreml.OpLinearQuantizerConfig(mode=ACTIVATION_MODE, dtype="int8"))
    passes = []
    for name in ("compression::insert_prefix_quantize_dequantize_pair",
                 "compression::insert_suffix_quantize_dequantize_pair"):
        graph_pass = PASS_REGISTRY[name]
        graph_pass.set_options([PassOption("config", config)])
        graph_pass.set_options([PassOption("activation_stats", stats)])
        passes.append(graph_pass)
    passes.append(PASS_REGISTRY["common::dequantize_quantize_pair_elimination"])
    return model_utils._apply_graph_pass(mlmodel, passes, spec_version=_SPECIFICATION_VERSION_IOS_17,
                                         pymil_load_func=milproto_to_pymil.load,
                                         skip_model_load=True)


def convert(program: str, out: str, precision: str, deployment_target: str = "iOS17",
            input_type: str = "tensor", mean: list[float] | None = None,
            std: list[float] | None = None, resolution: int = 224,
            class_labels: list[str] | None = None, calib: str | None = None,
            int8_activations: bool = False, model_name: str = "model") -> dict[str, Any]:
    """Convert the program at ``program`` to an ML Program archive at ``out`` (a deterministic
    zip, see :mod:`targets.coreml.mlpackage`); returns facts for the node's ``info``."""
    import coremltools as ct
    import torch

    from targets.coreml import mlpackage
    from targets.coreml.mil import MilEvaluator

    if deployment_target not in DEPLOYMENT_TARGETS:
        raise ValueError(f"deployment target {deployment_target!r}; use one of {DEPLOYMENT_TARGETS}")
    if precision == "int8" and deployment_target == "iOS15":
        raise ValueError("int8 weights need the iOS16 constexpr ops; use deployment target "
                         "iOS16 or later for int8")
    mean = list(mean or (0.485, 0.456, 0.406))
    std = list(std or (0.229, 0.224, 0.225))
    image_input = input_type == "image"
    torch.set_num_threads(1)
    exported, wrapped = _load_program(program, image_input, mean, std, resolution)
    ct_input, info = _input_type(ct, image_input, mean, std, resolution)
    compute = ct.precision.FLOAT32 if precision == "fp32" else ct.precision.FLOAT16
    classifier = None
    if class_labels:
        classifier = ct.ClassifierConfig(list(class_labels), predicted_feature_name="classLabel",
                                         predicted_probabilities_output=OUTPUT_NAME)
    try:
        mlmodel = ct.convert(exported, inputs=[ct_input],
                             outputs=[ct.TensorType(name=OUTPUT_NAME, dtype=np.float32)],
                             convert_to="mlprogram", compute_precision=compute,
                             minimum_deployment_target=getattr(ct.target, deployment_target),
                             classifier_config=classifier, skip_model_load=True)
    except Exception as exc:
        op = unsupported_op(exc)
        if op:
            raise UnsupportedOpError(op) from exc
        raise
    mlmodel.short_description = f"{model_name} ({precision}) converted by mobile-export"
    mlmodel.user_defined_metadata[PREPROCESSING_KEY] = json.dumps(
        {"mean": mean, "std": std, "pixel_range": 255.0, "layout": "NCHW RGB"}, sort_keys=True)
    mlmodel.user_defined_metadata["com.mobile-export.precision"] = precision
    info.update({
        "converter": f"coremltools {ct.__version__}: fused torch.export program"
                     f"{' wrapped with the per-channel 1/std and re-exported' if wrapped else ''}"
                     " -> run_decompositions({}) -> ct.convert",
        "format": "mlprogram", "deployment_target": deployment_target,
        "compute_precision": "fp32" if precision == "fp32" else "fp16",
        "io": "fp32", "batch": "fixed 1 (as an app feeds one frame)",
        "class_labels": len(class_labels) if class_labels else None,
    })
    with tempfile.TemporaryDirectory(prefix="mobile-export-coreml-") as tmp:
        work = Path(tmp)
        if precision == "int8":
            quant: dict[str, Any] = {"weights": "int8 linear symmetric per output channel "
                                                "(coremltools.optimize.coreml.linear_quantize_weights), "
                                                f"tensors with > {WEIGHT_THRESHOLD} elements"}
            if int8_activations and deployment_target in ("iOS17", "iOS18") and calib:
                base = work / "float.mlpackage"
                mlmodel.save(str(base))
                batch = np.load(calib).astype(np.float32)
                if image_input:   # the program takes pixels
                    m = np.asarray(mean, np.float32).reshape(1, 3, 1, 1)
                    s = np.asarray(std, np.float32).reshape(1, 3, 1, 1)
                    batch = (batch * s + m) * 255.0
                stats, groups = _activation_stats(base, batch)
                mlmodel = _quantize_activations(mlmodel, stats, groups, ct)
                quant["activations"] = (f"int8 {ACTIVATION_MODE} per tensor on the inputs of "
                                        f"conv/linear/add/pool; ranges from {len(batch)} "
                                        "calibration images measured by the MIL reference "
                                        "evaluator (coremltools' own calibration needs macOS)")
            else:
                why = ("not requested (int8_activations: false)" if not int8_activations else
                       "no calibration set" if not calib else
                       f"quantize/dequantize ops need iOS17 (target is {deployment_target})")
                quant["activations"] = f"fp16, weight-only int8 ({why})"
            import coremltools.optimize as cto

            config = cto.coreml.OptimizationConfig(global_config=cto.coreml.OpLinearQuantizerConfig(
                mode="linear_symmetric", dtype="int8", granularity="per_channel",
                weight_threshold=WEIGHT_THRESHOLD))
            mlmodel = cto.coreml.linear_quantize_weights(mlmodel, config)
            info["quantization"] = quant
        package = work / "Model.mlpackage"
        mlmodel.save(str(package))
        mlpackage.normalise(package)
        evaluator = MilEvaluator(package)
        info["ops"] = evaluator.op_counts()
        info["spec_version"] = int(mlmodel.get_spec().specificationVersion)
        info["canonical_sha256"] = mlpackage.pack(package, Path(out))
    return info


def convert_many(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Several :func:`convert` calls in one process (one coremltools import); a failed job
    returns ``{"error": ...}`` instead of stopping the others."""
    results = []
    for job in jobs:
        try:
            results.append(convert(**job))
        except Exception as exc:  # reported per job
            results.append({"error": f"{type(exc).__name__}: {exc}"})
    return results
