"""``make bench``'s Android figures: TFLite on LiteRT (XNNPACK) against ONNX Runtime, side by side.

Cases for one interleaved session (1 thread, batch 1, the mobile convention):

* **MobileNetV2 1.0-224** (the zoo model at the paper's resolution): ONNX Runtime fp32, TFLite
  fp32 and TFLite int8, all converted by the pipeline from the one ONNX export. The issue's
  gates: TFLite fp32 ≤ 1.05× ONNX Runtime fp32, TFLite int8 ≤ 0.45× TFLite fp32. Its weights are
  random (nothing can be downloaded), which does not change latency; int8 parity on random
  weights means nothing, so that int8 model is converted without the mixed-precision fallback
  and its parity is not a figure.
* **the native references** (targets.tflite.native): the same MobileNetV2 1.0-224 built in
  Keras and converted by TensorFlow's own TFLite converter, fp32 and full-int8 calibrated on the
  same images, in the same session (rows ``mobilenet_v2_1.0_224-native-fp32`` / ``-int8``, op
  counts beside the product's). Gates: product fp32 ≤ 1.02× native fp32, int8 ≤ 1.05× native int8.
* **the trained built-in model** (what ``make android`` publishes, fallback included): TFLite
  fp32 and int8 with their held-out accuracy, the int8 figure that parity backs.

The product's fp32 graph has five PAD ops the native one lacks: PyTorch pads a stride-2 3x3
convolution by 1 on every side, which TFLite's SAME (0 before, 1 after on an even size) cannot
express. They stay, because they cost nothing on XNNPACK, which fuses a zero constant pad into
the convolution after it, and the exact alternative (a 4x4 kernel with a zero last row and
column, which SAME pads 1/1) measured slower: 8.73 against 8.12 ms on the AMD EPYC Zen 4.

The ratios carry their limits and verdicts (``pipeline.bench_gates``), which name the CPU's int8
features when they explain an int8 miss.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from pipeline.bench_gates import figure
from pipeline.config import PipelineConfig
from targets.base import Runner, file_runner
from targets.tflite.inspect import io_details
from targets.tflite.runner import LiteRTRunner

#: runs (or reuses from the cache) a pipeline run: its nodes by name and report["model"]
Converted = Callable[[PipelineConfig], tuple[dict[str, dict[str, Any]], dict[str, Any]]]

FULL_SIZE = {"model": "mobilenet_v2", "width": 1.0, "resolution": 224}


def _path(node: dict[str, Any]) -> Path:
    return Path(node["artifact"]["path"])


def android_cases(artifacts_dir: Path, trained: dict[str, Any], converted: Converted,
                  threads: int = 1
                  ) -> tuple[dict[str, tuple[Runner, dict[str, np.ndarray]]], dict[str, dict]]:
    """The session's cases (``label|runtime|1``) and, per case, its target, precision, group
    (``full_size`` or ``trained``), verdict and accuracy; ``converted`` runs the pipeline (the
    bench driver's), the ONNX Runtime case runs through targets.base."""
    cases: dict[str, tuple[Runner, dict[str, np.ndarray]]] = {}
    facts: dict[str, dict[str, Any]] = {}
    rng = np.random.default_rng(0)
    full = PipelineConfig.model_validate({
        **FULL_SIZE, "artifacts_dir": artifacts_dir, "targets": ["onnx", "tflite"],
        "precisions": ["fp32", "int8"], "int8_fallback": False})
    built = PipelineConfig.model_validate({**trained, "artifacts_dir": artifacts_dir,
                                           "targets": ["tflite"], "precisions": ["fp32", "int8"]})
    for group, config in (("full_size", full), ("trained", built)):
        nodes, model = converted(config)
        label = model["label"]
        size = config.resolution
        feed = {"input": rng.standard_normal((1, 3, size, size)).astype(np.float32)}
        picks = [("tflite", p, LiteRTRunner(_path(nodes[f"tflite:{p}"]), threads),
                  nodes[f"tflite:{p}"]) for p in ("fp32", "int8")]
        if group == "full_size":
            picks.insert(0, ("onnx", "fp32", file_runner(_path(nodes["export_onnx"]), threads),
                             nodes["export_onnx"]))
        for target, precision, runner, node in picks:
            name = f"{label}-{precision}|{runner.runtime}|1"
            cases[name] = (runner, feed)
            facts[name] = {"target": target, "precision": precision, "group": group,
                           "macs": model.get("macs"), "verdict": node["parity"]["verdict"],
                           "accuracy": (node.get("accuracy") or {}).get("value"),
                           "ops": (node.get("info") or {}).get("ops"),
                           "float_layers": len(((node.get("info") or {}).get("mixed_precision")
                                                or {}).get("float_layers") or [])}
        if group == "full_size":
            native_cases(artifacts_dir, full, label, feed["input"], threads, cases, facts)
    return cases, facts


def native_cases(artifacts_dir: Path, config: PipelineConfig, label: str, image: np.ndarray,
                 threads: int, cases: dict[str, tuple[Runner, dict[str, np.ndarray]]],
                 facts: dict[str, dict[str, Any]]) -> None:
    """Add the Keras-native fp32/int8 references of the full-size model (same feed), calibrated
    on the product's own calibration set."""
    from pipeline.calibration import calibration_batch
    from pipeline.context import RunContext
    from targets.tflite.native import native_references

    native = native_references(artifacts_dir, config.resolution, config.width,
                               calibration_batch(RunContext(config)))
    for precision, path in native["paths"].items():
        runner = LiteRTRunner(path, threads)
        name = f"{label}-native-{precision}|{runner.runtime}|1"
        cases[name] = (runner, {io_details(path)["inputs"][0]["name"]: image})
        facts[name] = {"target": "tflite-native", "precision": precision, "group": "full_size",
                       "macs": None, "verdict": "reference", "accuracy": None,
                       "ops": native["facts"]["files"][precision]["ops"],
                       "converter": f"tf.keras.applications.MobileNetV2 → TFLiteConverter "
                                    f"(tensorflow {native['facts']['tensorflow']}, keras "
                                    f"{native['facts']['keras']}), random weights"}


def android_figures(rows: list[dict[str, Any]], machine: dict[str, Any]) -> dict[str, Any]:
    """The gated ratios of each group (medians of one session) with verdicts that name the
    CPU's int8 limit when it explains a miss."""
    medians = {(r["group"], r["target"], r["precision"]): r["median_ms"] for r in rows
               if "group" in r}
    figures: dict[str, Any] = {}
    for group in ("full_size", "trained"):
        ratios = {}
        ort = medians.get((group, "onnx", "fp32"))
        fp32, int8 = medians.get((group, "tflite", "fp32")), medians.get((group, "tflite", "int8"))
        if ort and fp32:
            ratios["tflite_fp32_over_ort_fp32"] = round(fp32 / ort, 3)
        if fp32 and int8:
            ratios["tflite_int8_over_tflite_fp32"] = round(int8 / fp32, 3)
        for precision, mine in (("fp32", fp32), ("int8", int8)):
            native = medians.get((group, "tflite-native", precision))
            if mine and native:
                ratios[f"tflite_{precision}_over_native_{precision}"] = round(mine / native, 3)
        figures[group] = {name: figure(name, value, machine) for name, value in ratios.items()}
    return figures
