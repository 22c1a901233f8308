"""Android target: ONNX -> TFLite fp32 / fp16 / int8 through onnx2tf, run on the LiteRT interpreter.

Conversion runs in an isolated child process (``targets/tflite/convert.py``): TensorFlow and
onnx2tf are never imported in this process. One stage per precision (``tflite:fp32`` ...), each
converting the trunk's ONNX export; each node records the .tflite's operator counts, the facts an
app needs to feed it (the sidecar), and parity and latency on LiteRT with XNNPACK.

Config keys read here with defaults (wired in the trunk separately):
``tflite_layout`` ("NHWC", the Android convention, or "NCHW") and ``tflite_int8_io`` (False: the
int8 model takes and returns float32; True: int8 tensors quantized with their own scale/zero-point).
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from targets.base import Runner, Target, register
from targets.tflite.runner import LiteRTRunner

RUNTIME_MODULES = ("onnx2tf", "tensorflow", "tf_keras", "ai_edge_litert")


@register
class TfliteTarget(Target):
    """TFLite for Android: fp32, fp16 (fp16 weights) and int8 (full-integer, per-channel)."""

    name = "tflite"
    platform = "android"
    precisions = ("fp32", "fp16", "int8")
    suffixes = (".tflite",)
    sidecars = ("model.json",)   # targets.tflite.sidecar.SIDECAR (imported lazily: it loads numpy)

    def unavailable_reason(self) -> str | None:
        missing = [m for m in RUNTIME_MODULES if importlib.util.find_spec(m) is None]
        if missing:
            return f"{', '.join(missing)} not importable; run `make setup`"
        return None

    def stages(self, ctx, precisions):
        from targets.tflite.stage import TfliteConvertStage

        return [TfliteConvertStage(ctx, p) for p in self.precisions if p in precisions]

    def runner(self, path: Path, threads: int) -> Runner:
        return LiteRTRunner(path, threads)

    def publish_name(self, output: str, precision: str, suffix: str) -> str:
        return f"model_{precision}{suffix}"

    def write_sidecar(self, folder: Path, nodes: list[dict]) -> None:
        from pipeline.files import atomic_write_bytes
        from targets.tflite.sidecar import SIDECAR, build_sidecar

        sidecar = build_sidecar(Path(folder), nodes)
        atomic_write_bytes(Path(folder) / SIDECAR,
                           (json.dumps(sidecar, indent=2) + "\n").encode())

    def join_tensors(self, tensors, layers, info):
        from targets.tflite.tensor_join import join_tflite

        return join_tflite(tensors, layers, info)

    def tensor_names(self, path, layers, info):
        from targets.tflite.tensor_join import op_output_names, tflite_names

        return {onnx: name for onnx, (name, _) in
                tflite_names(op_output_names(path), layers, info).items()}
