"""``make bench``'s native references: MobileNetV2 built natively in Keras, converted by
TensorFlow's own TFLite converter, to time the product's TFLite artifacts against.

The product's path is PyTorch → ONNX → onnx2tf → TFLite; the native path is
``tf.keras.applications.MobileNetV2`` (random weights, seeded: nothing can be downloaded, and
weights do not change latency) → ``TFLiteConverter.from_keras_model``: fp32, and full-integer
int8 (float I/O, like the product's) calibrated on the very images the product's int8 used.

Conversion runs in a child process (:func:`build_native`, through pipeline.isolate); the files
are kept under ``<artifacts>/bench/native/<key>/`` where the key covers every input that changes
the bytes (TensorFlow and Keras versions, width, resolution, seed, the calibration set's digest),
so a second ``make bench`` converts nothing.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

NATIVE_SEED = 0
PRECISIONS = ("fp32", "int8")
CONVERT_TIMEOUT_S = 900.0


def build_native(out_dir: str, resolution: int, alpha: float, seed: int,
                 calib_path: str) -> dict[str, Any]:
    """(Child process.) Build Keras MobileNetV2 and write ``model_fp32.tflite`` and
    ``model_int8.tflite`` into ``out_dir``; returns the versions and per-file facts."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    from targets.tflite.inspect import op_counts
    from targets.tflite.offline import network_guard

    keras.utils.set_random_seed(seed)
    # NHWC, the layout the Keras model takes; the product's runner transposes its NCHW feed
    calibration = np.load(calib_path).astype(np.float32).transpose(0, 2, 3, 1)
    out = Path(out_dir)
    with network_guard() as attempts:
        model = tf.keras.applications.MobileNetV2(
            input_shape=(resolution, resolution, 3), alpha=alpha, weights=None,
            classes=1000, classifier_activation=None)
        for precision in PRECISIONS:
            converter = tf.lite.TFLiteConverter.from_keras_model(model)
            if precision == "int8":
                converter.optimizations = [tf.lite.Optimize.DEFAULT]
                converter.representative_dataset = lambda: ([image[None]] for image in calibration)
                converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
                converter.inference_input_type = tf.float32
                converter.inference_output_type = tf.float32
            (out / f"model_{precision}.tflite").write_bytes(converter.convert())
    if attempts:
        raise RuntimeError(f"the native conversion tried to reach the network ({attempts[0]})")
    files = {p: {"ops": op_counts(out / f"model_{p}.tflite"),
                 "bytes": (out / f"model_{p}.tflite").stat().st_size} for p in PRECISIONS}
    return {"tensorflow": tf.__version__, "keras": keras.__version__,
            "calibration_images": int(len(calibration)), "files": files}


def _key(resolution: int, alpha: float, seed: int, calibration: np.ndarray) -> str:
    from importlib.metadata import version

    digest = hashlib.sha256(np.ascontiguousarray(calibration, np.float32).tobytes()).hexdigest()
    facts = {"builder": "keras.applications.MobileNetV2", "resolution": resolution,
             "alpha": alpha, "seed": seed, "calibration": digest,
             "tensorflow": version("tensorflow"), "keras": version("keras")}
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]


#: facts.json is a few hundred bytes; anything larger is not ours
MAX_FACTS_BYTES = 64 * 2**10


def _read_facts(path: Path) -> dict[str, Any]:
    """The facts a conversion left, bounded and checked for the keys the bench reads; a folder
    whose facts are not that is refused with the fix (delete it: the next bench converts)."""
    with open(path, "rb") as handle:
        data = handle.read(MAX_FACTS_BYTES + 1)
    try:
        if len(data) > MAX_FACTS_BYTES:
            raise ValueError(f"larger than {MAX_FACTS_BYTES} bytes")
        facts = json.loads(data)
        if not all(isinstance((facts["files"][p] or {}).get("ops"), dict) for p in PRECISIONS):
            raise ValueError("no op counts")
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path} is not a native reference's facts ({exc}); delete "
                         f"{path.parent} and run make bench again") from None
    return facts


def _sweep(root: Path) -> None:
    """Remove what a killed bench left half-converted (older than two conversion timeouts)."""
    for leftover in root.glob(".native-*"):
        if time.time() - leftover.stat().st_mtime > 2 * CONVERT_TIMEOUT_S:
            shutil.rmtree(leftover, ignore_errors=True)


def native_references(artifacts_dir: Path, resolution: int, alpha: float,
                      calibration: np.ndarray, seed: int = NATIVE_SEED) -> dict[str, Any]:
    """The native fp32 and int8 files (converted once, then reused) and their facts:
    ``{"paths": {precision: Path}, "facts": {...}}``."""
    from pipeline.isolate import run_isolated

    root = Path(artifacts_dir) / "bench" / "native"
    folder = root / f"mobilenet_v2_{alpha}_{resolution}-{_key(resolution, alpha, seed, calibration)}"
    facts_file = folder / "facts.json"
    if not facts_file.is_file():
        root.mkdir(parents=True, exist_ok=True)
        _sweep(root)
        # converted into a temp folder beside the final one, then renamed: never half-written
        work = Path(tempfile.mkdtemp(prefix=".native-", dir=root))
        try:
            calib_path = work / "calibration.npy"
            np.save(calib_path, np.ascontiguousarray(calibration, np.float32))
            facts = run_isolated("targets.tflite.native:build_native",
                                 {"out_dir": str(work), "resolution": resolution,
                                  "alpha": alpha, "seed": seed, "calib_path": str(calib_path)},
                                 stage="bench:native", model=folder.name,
                                 timeout_s=CONVERT_TIMEOUT_S)
            calib_path.unlink()
            (work / "facts.json").write_text(json.dumps(facts, indent=1, sort_keys=True))
            shutil.rmtree(folder, ignore_errors=True)
            work.rename(folder)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    facts = _read_facts(facts_file)
    return {"paths": {p: folder / f"model_{p}.tflite" for p in PRECISIONS}, "facts": facts,
            "folder": str(folder)}
