"""TFLite full-integer int8 from one calibration, with layers optionally kept in float.

Runs in the converter's child process (TensorFlow imported here only). The TFLite converter's
own two steps are split so that one calibration serves many quantizations, as
``pipeline.int8.qdq`` does for ONNX Runtime:

1. :func:`calibrate` — the converter with ``_experimental_calibrate_only``: the float model
   annotated with the min/max ranges the representative dataset produced;
2. :func:`quantize_calibrated` — TensorFlow's MLIR quantizer (``convert.mlir_quantize``, the call
   the converter itself makes, and the one the TFLite Quantization Debugger uses for its
   ``denylisted_nodes``) on those ranges: per-channel int8 weights, int8 activations, float32 or
   int8 I/O, and the named layers left in float.

A layer is named by its output tensor in the calibrated model (what ``denylisted_nodes``
matches). :func:`mixed_precision_candidates` ranks the weighted layers with the one ranking of
``pipeline.int8.search`` (each layer alone quantized; on a sample of the probe, the layers
shared among one single-threaded process per core) and writes the candidate models with the
top k layers in float; the stage then judges each with the real gates. The Quantization Debugger's own per-layer statistic
(``rmse/scale``) is not used to rank: it measures each op's rounding against its own quantization
step, which is ~0.29 (uniform rounding noise) for every layer of the trained MobileNetV2 and does
not say which layers hurt the output.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

#: Weighted ops (what can be kept in float), by TFLite builtin name.
WEIGHTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "CONV_3D")


def calibrate(converter: Any, calibration: np.ndarray) -> bytes:
    """The float model with the calibration ranges of ``calibration`` (N, ...) recorded, from a
    ``TFLiteConverter`` already configured for int8 (optimizations, supported ops)."""
    def representative() -> Iterator[list[np.ndarray]]:
        for index in range(len(calibration)):
            yield [calibration[index:index + 1]]

    converter.representative_dataset = representative
    converter._experimental_calibrate_only = True
    return converter.convert()


def quantize_calibrated(calibrated: bytes, *, per_channel: bool = True, int8_io: bool = False,
                        float_layers: list[str] | tuple[str, ...] = ()) -> bytes:
    """Full-integer int8 .tflite bytes from a calibrated model; ``float_layers`` (output tensor
    names) stay float, with QUANTIZE/DEQUANTIZE at their borders."""
    import tensorflow as tf
    from tensorflow.lite.python import convert

    io_type = tf.int8 if int8_io else tf.float32
    # fully_quantize=False is the converter's own setting: the I/O type follows input/output
    # data type (True would force integer I/O whatever they say)
    return convert.mlir_quantize(calibrated, disable_per_channel=not per_channel,
                                 fully_quantize=False, input_data_type=io_type,
                                 output_data_type=io_type,
                                 denylisted_nodes=list(float_layers) or None)


def _ops(model: bytes) -> tuple[list[dict[str, Any]], dict[int, dict[str, Any]]]:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(model_content=model, experimental_op_resolver_type=
                              OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    return interpreter._get_ops_details(), tensors


def weighted_layers(model: bytes) -> list[dict[str, Any]]:
    """The weighted layers of a float (or calibrated) model in execution order: output tensor
    name, op, weight parameters and multiply-adds per sample (a conv's weights times its output's
    spatial size, as ``pipeline.int8.search.layer_costs`` counts ONNX layers)."""
    ops, tensors = _ops(model)
    layers = []
    for op in ops:
        if op["op_name"] not in WEIGHTED_OPS or len(op["inputs"]) < 2:
            continue
        weights = [int(d) for d in tensors[op["inputs"][1]]["shape"]]
        out = [int(d) for d in tensors[op["outputs"][0]]["shape"]]
        params = math.prod(weights)
        spatial = math.prod(out[1:-1]) if op["op_name"] != "FULLY_CONNECTED" else 1
        layers.append({"tensor": tensors[op["outputs"][0]]["name"], "op": op["op_name"],
                       "index": len(layers), "output_shape": out, "params": params,
                       "macs": params * spatial})
    return layers


def float_compute_ops(model: bytes) -> list[dict[str, str]]:
    """Ops of an int8 model that compute in float (first input float32; QUANTIZE and DEQUANTIZE
    excluded): the layers kept in float, plus any op the quantizer had no int8 kernel for."""
    ops, tensors = _ops(model)
    return [{"op": op["op_name"], "tensor": tensors[op["outputs"][0]]["name"]} for op in ops
            if op["op_name"] not in ("QUANTIZE", "DEQUANTIZE") and op["inputs"].size
            and op["inputs"][0] >= 0 and tensors[op["inputs"][0]]["dtype"] == np.float32]


def op_outputs(model: bytes) -> list[str]:
    """Every op's first output tensor name (the names ``denylisted_nodes`` can hold)."""
    ops, tensors = _ops(model)
    return [tensors[op["outputs"][0]]["name"] for op in ops if op["outputs"]]


#: probe inputs the ranking runs, a sample the stage takes (the candidates are then judged on
#: the whole parity set). The ranking's cost is one mostly-float inference per layer and input:
#: 61 of its 75 s for the built-in model on all 360 (AMD EPYC Zen 4, 1 thread). Only the order
#: of the top layers matters; on the built-in model this sample kept the same top 8 and chose
#: the same layer.
RANKING_PROBE_INPUTS = 96


def _rank_chunk(calibrated_path: str, probe_path: str, layers: list[str], every_op: list[str],
                scratch: str, layout: str, per_channel: bool) -> dict[str, float]:
    """Sensitivity of ``layers``, each alone quantized (a ranking worker's share, 1 thread)."""
    from pipeline.int8.probe import Probe
    from pipeline.int8.search import rank_alone
    from targets.tflite.runner import LiteRTRunner

    calibrated = Path(calibrated_path).read_bytes()
    probe, path = Probe.load(Path(probe_path)), Path(scratch)

    def alone(tensor: str) -> Path:   # that layer alone quantized: every other op denylisted
        others = [name for name in every_op if name != tensor]
        path.write_bytes(quantize_calibrated(calibrated, per_channel=per_channel,
                                             float_layers=others))
        return path

    try:
        return rank_alone(layers, alone, probe, lambda model: LiteRTRunner(model, 1, layout))
    finally:
        path.unlink(missing_ok=True)


def rank_layers(calibrated_path: str, probe_path: str, layers: list[str], every_op: list[str],
                out: Path, *, layout: str, per_channel: bool, workers: int) -> dict[str, float]:
    """Layer -> sensitivity, most sensitive first (pipeline.int8.search.rank_alone), the layers
    shared among ``workers`` processes, each measuring with one thread: every figure is the one
    a serial ranking gives, only sooner where there are cores for it."""
    chunks = [layers[i::workers] for i in range(workers)]
    args = [(calibrated_path, probe_path, chunk, every_op, str(out / f"one_layer_{i}.tflite"),
             layout, per_channel) for i, chunk in enumerate(chunks) if chunk]
    if len(args) == 1:
        found = _rank_chunk(*args[0])
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn: forking a process that has TensorFlow's threads running can deadlock
        with ProcessPoolExecutor(len(args), mp_context=multiprocessing.get_context("spawn")) as pool:
            found = {k: v for part in pool.map(_rank_chunk, *zip(*args)) for k, v in part.items()}
    ordered = {layer: found[layer] for layer in layers}   # ties keep the model's order
    return dict(sorted(ordered.items(), key=lambda item: -item[1]))


def mixed_precision_candidates(calibrated_path: str, probe_path: str, out_dir: str, *,
                               layout: str, per_channel: bool = True, int8_io: bool = False,
                               max_float_layers: int = 8) -> dict[str, Any]:
    """Rank the weighted layers of the calibrated model by sensitivity and write the candidates
    ``mixed_<k>.tflite`` (k = 1 … cap, the top k layers in float) to ``out_dir``.

    ``probe_path``: a saved :class:`pipeline.int8.probe.Probe` (inputs and reference outputs;
    the stage passes :data:`RANKING_PROBE_INPUTS` of them), ranked by one single-threaded
    process per usable core.
    Returns the ranking (tensor -> error, most sensitive first), each layer's facts, the
    candidate paths by k and how the ranking was made."""
    from pipeline.int8.probe import Probe
    from pipeline.machine import usable_cores

    start = time.perf_counter()
    calibrated = Path(calibrated_path).read_bytes()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    probe = Probe.load(Path(probe_path))
    layers = weighted_layers(calibrated)
    workers = max(1, min(usable_cores() or 1, len(layers), 8))
    errors = rank_layers(calibrated_path, probe_path, [layer["tensor"] for layer in layers],
                         op_outputs(calibrated), out, layout=layout, per_channel=per_channel,
                         workers=workers)
    order = list(errors)
    candidates = {}
    for k in range(1, min(max_float_layers, len(order)) + 1):
        path = out / f"mixed_{k}.tflite"
        path.write_bytes(quantize_calibrated(calibrated, per_channel=per_channel,
                                             int8_io=int8_io, float_layers=order[:k]))
        candidates[str(k)] = str(path)
    return {"sensitivity": {name: errors[name] for name in order},
            "layers": layers, "candidates": candidates,
            "ranking": {"probe_inputs": len(probe.inputs), "workers": workers},
            "seconds": round(time.perf_counter() - start, 1)}
