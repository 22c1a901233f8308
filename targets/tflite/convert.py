"""ONNX -> TFLite through onnx2tf: the code that runs in the isolated child process.

The parent (``targets/tflite/stage.py``) calls :func:`convert` (and targets.tflite.per_op's
:func:`compare_per_op`) through
:func:`pipeline.isolate.run_isolated` with JSON-able arguments; TensorFlow and onnx2tf are imported
here only, never in the parent.

How: onnx2tf translates the ONNX graph (batch fixed to 1, NCHW -> NHWC unless the input is kept
NCHW) into a Keras model; TensorFlow's TFLite converter then writes the one .tflite the stage
needs, with onnx2tf's own converter settings: fp32; fp16 (float16 weights); int8 full-integer with
per-channel weights, calibrated on the pipeline's calibration set (real images only), float32 or
int8 I/O. (onnx2tf's full path would also write a SavedModel and every variant at once: for int8
that is dynamic-range, integer, full-integer and two int16-activation models, five conversions
where one is needed.)

Offline by construction. onnx2tf reads a 20-image NHWC sample, ``calibration_image_sample_data_
20x128x128x3_float32.npy``, from the *current directory* for its dummy inferences (and for int8
calibration when it quantizes by itself), and downloads it from GitHub when it is absent. The child
therefore runs in a scratch folder where that file is written first, from the real photos of the
run's parity set. On top of that every outbound network connection is refused while the
converters run (:func:`network_guard`) and any attempt is an error, so a future onnx2tf that
fetches something else fails loudly instead of silently depending on the network.

Error reporting: a failure raises :class:`ConversionError` whose message is one line; it comes
back to the parent as the child's structured error (pipeline.isolate) and is the stage's reason.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from targets.tflite.inspect import io_details, op_counts
from targets.tflite.offline import Tee, captured_stdout, network_guard
from targets.tflite.tensor_join import recorded_tensor_names
from targets.tflite.rewrite import apply_rewrites

#: The file onnx2tf looks for in the current directory before downloading it.
ONNX2TF_SAMPLE_FILE = "calibration_image_sample_data_20x128x128x3_float32.npy"
ONNX2TF_SAMPLE_COUNT = 20
LAYOUTS = ("NHWC", "NCHW")



class ConversionError(RuntimeError):
    """The conversion failed for a reason we can state in one line."""


# -- the child's work --------------------------------------------------------------------------


def onnx_io(onnx_path: Path) -> tuple[list[tuple[str, list[int | str]]], list[tuple[str, list]]]:
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    init = {i.name for i in model.graph.initializer}

    def shape(value: Any) -> list[int | str]:
        return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                for d in value.type.tensor_type.shape.dim]

    inputs = [(v.name, shape(v)) for v in model.graph.input if v.name not in init]
    outputs = [(v.name, shape(v)) for v in model.graph.output]
    return inputs, outputs


def _op_type_of(onnx_path: Path, node_name: str | None) -> str | None:
    import onnx

    if not node_name:
        return None
    model = onnx.load(str(onnx_path), load_external_data=False)
    for node in model.graph.node:
        if node.name == node_name or node_name in node.output:
            return node.op_type
    return None


def _write_sample(scratch: Path, sample_path: Path) -> None:
    """onnx2tf's sample file, made of the run's real photos (N, H, W, 3) cycled to 20 images."""
    scratch.mkdir(parents=True, exist_ok=True)
    photos = np.load(sample_path).astype(np.float32)
    picks = [photos[i % len(photos)] for i in range(ONNX2TF_SAMPLE_COUNT)]
    np.save(scratch / ONNX2TF_SAMPLE_FILE, np.stack(picks).astype(np.float32))


def batch_one_copy(source: Path, dest: Path) -> Path:
    """A copy of the ONNX model with every symbolic input/output dimension fixed to 1.

    onnx2tf applies ``overwrite_input_shape`` only through its onnxsim subprocess; fixing the
    dimensions here makes batch 1 certain whatever the environment. The copy also gets the
    meaning-preserving rewrites of :mod:`targets.tflite.rewrite`."""
    import onnx

    model = onnx.load(str(source))
    init = {i.name for i in model.graph.initializer}
    for value in [v for v in model.graph.input if v.name not in init] + list(model.graph.output):
        for dim in value.type.tensor_type.shape.dim:
            if not dim.HasField("dim_value"):
                dim.dim_value = 1
    del model.graph.value_info[:]
    apply_rewrites(model)   # short ONNX forms onnx2tf mis-converts, spelled out (rewrite.py)
    onnx.save(model, str(dest))
    return dest


def _onnxsim_on_path() -> bool:
    """onnx2tf runs onnxsim as a command: put this interpreter's scripts folder first on PATH so
    the pinned onnxsim is found whether or not the virtual environment is activated."""
    scripts = str(Path(sys.executable).parent)
    os.environ["PATH"] = scripts + os.pathsep + os.environ.get("PATH", "")
    return shutil.which("onnxsim") is not None


def _fixed_shapes(inputs: list[tuple[str, list]]) -> list[str]:
    """onnx2tf's ``overwrite_input_shape``: every dynamic dimension fixed to 1 (batch 1 is the
    mobile convention; onnx2tf then needs no dynamic-shape ops)."""
    return [f"{name}:" + ",".join(str(d) if isinstance(d, int) and d > 0 else "1" for d in shape)
            for name, shape in inputs]


def onnx2tf_kwargs(onnx_path: Path, out_dir: Path, layout: str,
                    inputs: list[tuple[str, list]]) -> dict[str, Any]:
    if layout not in LAYOUTS:
        raise ConversionError(f"unknown layout {layout!r}; use one of {list(LAYOUTS)}")
    kwargs: dict[str, Any] = {
        "input_onnx_file_path": str(onnx_path),
        "output_folder_path": str(out_dir),
        "overwrite_input_shape": _fixed_shapes(inputs),
        "batch_size": 1,
        "verbosity": "warn",
    }
    if layout == "NCHW":
        kwargs["keep_ncw_or_nchw_or_ncdhw_input_names"] = [name for name, _ in inputs]
    return kwargs


def _explain(exc: BaseException, tee: Tee, onnx_path: Path) -> str:
    """One line saying why onnx2tf failed, naming the ONNX op where it can."""
    from importlib import metadata

    version = metadata.version("onnx2tf")
    if isinstance(exc, ModuleNotFoundError) and (exc.name or "").startswith("onnx2tf.ops."):
        op = exc.name.rsplit(".", 1)[-1]
        node = getattr(exc, "onnx_op_name", None)
        where = f" (node '{node}')" if node else ""
        return (f"onnx2tf {version} cannot convert ONNX op '{op}'{where}: it has no converter "
                "for that op; replace the op in the model or export it differently")
    node = getattr(exc, "onnx_op_name", None)
    detail = (str(exc).strip().splitlines() or [""])[0][:300] if not isinstance(exc, SystemExit) \
        else (tee.last_error() or f"exit code {exc.code}")
    if node:
        op = _op_type_of(onnx_path, node) or "?"
        return (f"onnx2tf {version} failed on ONNX node '{node}' (op '{op}'): "
                f"{type(exc).__name__ if not isinstance(exc, SystemExit) else 'stopped'}: {detail}")
    kind = "stopped" if isinstance(exc, SystemExit) else type(exc).__name__
    return f"onnx2tf {version} failed ({kind}): {detail}"


@contextlib.contextmanager
def _in_scratch(scratch: Path) -> Iterator[None]:
    scratch.mkdir(parents=True, exist_ok=True)
    cwd = os.getcwd()
    os.chdir(scratch)
    try:
        yield
    finally:
        os.chdir(cwd)


def run_onnx2tf(onnx_path: Path, scratch: Path, sample_path: Path,
                 kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Run ``onnx2tf.convert`` offline in ``scratch``; returns its result and facts about the
    run."""
    import onnx2tf
    from onnx2tf.utils import common_functions

    _write_sample(scratch, sample_path)
    onnxsim = _onnxsim_on_path()
    reads: list[str] = []
    original = common_functions.download_test_image_data

    def local_sample() -> np.ndarray:  # still onnx2tf's own function: it reads the local file
        reads.append(str(Path.cwd() / ONNX2TF_SAMPLE_FILE))
        return original()

    module = sys.modules["onnx2tf.onnx2tf"]
    module.download_test_image_data = local_sample
    try:
        with _in_scratch(scratch), captured_stdout() as tee, network_guard() as attempts, \
                recorded_tensor_names(module) as names:
            try:
                result = onnx2tf.convert(**kwargs)
            except (Exception, SystemExit) as exc:
                if attempts:
                    raise ConversionError(f"onnx2tf tried to reach the network ({attempts[0]}) "
                                          "and was refused; nothing may be downloaded") from exc
                raise ConversionError(_explain(exc, tee, onnx_path)) from exc
    finally:
        module.download_test_image_data = original
    if attempts:
        raise ConversionError(f"onnx2tf tried to reach the network ({', '.join(attempts)}) "
                              "and was refused; nothing may be downloaded")
    return result, {"network_attempts": list(attempts), "sample_reads": len(reads),
                    "sample_file": ONNX2TF_SAMPLE_FILE,
                    "onnxsim": onnxsim, "tensor_names": names}


def _rename_io(tflite_path: Path, onnx_inputs: list[tuple[str, list]],
               onnx_outputs: list[tuple[str, list]]) -> None:
    """Give the .tflite's input/output tensors the ONNX names (``input``, ``output``), matching
    by element count when that is unambiguous, else by position (as onnx2tf's own option does,
    which would need ``flatc`` and a download), and one ``serving_default`` signature keyed by
    those names (what ``Interpreter.get_signature_runner`` and Android's ``runSignature`` use)."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(tflite_path))
    graph = model.subgraphs[0]

    def assign(indices: list[int], onnx_side: list[tuple[str, list]]) -> None:
        tensors = [graph.tensors[i] for i in indices]
        sizes = [int(np.prod([d if isinstance(d, int) and d > 0 else 1 for d in shape]))
                 for _, shape in onnx_side]
        unique = len(set(sizes)) == len(sizes)
        for position, tensor in enumerate(tensors):
            size = int(np.prod(tensor.shape)) if tensor.shape is not None else -1
            match = [n for (n, _), s in zip(onnx_side, sizes) if s == size] if unique else []
            if len(match) == 1:
                tensor.name = match[0].encode()
            elif position < len(onnx_side):
                tensor.name = onnx_side[position][0].encode()

    assign(list(graph.inputs), onnx_inputs)
    assign(list(graph.outputs), onnx_outputs)

    def tensor_map(indices: list[int]) -> list[Any]:
        return [schema.TensorMapT(name=graph.tensors[i].name, tensorIndex=int(i))
                for i in indices]

    model.signatureDefs = [schema.SignatureDefT(
        inputs=tensor_map(list(graph.inputs)), outputs=tensor_map(list(graph.outputs)),
        signatureKey=b"serving_default", subgraphIndex=0)]
    tmp = tflite_path.with_suffix(".renamed.tflite")
    flatbuffer_utils.write_model(model, str(tmp))
    os.replace(tmp, tflite_path)


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for dist in ("onnx2tf", "tensorflow", "tf_keras", "ai-edge-litert", "onnx", "onnxsim"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "absent"
    return out


PRECISIONS = ("fp32", "fp16", "int8")


def convert(onnx_path: str, out_path: str, precision: str, layout: str, sample_path: str,
            calib_path: str | None = None, int8_io: bool = False,
            per_channel: bool = True, calibrated_path: str | None = None) -> dict[str, Any]:
    """Convert ``onnx_path`` to one .tflite at ``out_path``; returns JSON facts for the record.

    ``sample_path``: (N, H, W, 3) float32 real photos, normalised as the model expects (written
    as onnx2tf's sample file). ``calib_path`` (int8): (N, 3, H, W) float32 calibration inputs,
    normalised as the model expects (the pipeline's calibration set). ``calibrated_path``
    (int8): where to keep the calibrated float model, from which
    :func:`targets.tflite.quantize.mixed_precision_candidates` re-quantizes without converting
    again.
    """
    if precision not in PRECISIONS:
        raise ConversionError(f"unknown precision {precision!r}; use one of {list(PRECISIONS)}")
    if precision == "int8" and calib_path is None:
        raise ConversionError("int8 needs the calibration set (calib_path)")
    with private_dir() as work:
        return _convert_in(Path(onnx_path), Path(out_path), precision, layout,
                           Path(sample_path), work, calib_path, int8_io, per_channel,
                           calibrated_path)


@contextlib.contextmanager
def private_dir() -> Iterator[Path]:
    """A fresh folder for onnx2tf (outside the cache, whose stage folders hold a colon)."""
    with tempfile.TemporaryDirectory(prefix="mobile-export-onnx2tf-") as tmp:
        yield Path(tmp)


def _convert_in(source: Path, out_path: Path, precision: str, layout: str, sample_path: Path,
                work: Path, calib_path: str | None, int8_io: bool,
                per_channel: bool = True, calibrated_path: str | None = None) -> dict[str, Any]:
    onnx_path = batch_one_copy(source, work / "model.onnx")
    inputs, outputs = onnx_io(onnx_path)
    if precision == "int8" and len(inputs) != 1:
        raise ConversionError(f"int8 calibration feeds one image input; the model has "
                              f"{len(inputs)} inputs")
    kwargs = onnx2tf_kwargs(onnx_path, work / "out", layout, inputs)
    # onnx2tf translates the graph; TensorFlow's own converter then writes the one .tflite this
    # precision needs, with the settings onnx2tf uses (its full path would also write a
    # SavedModel and every other variant: five conversions instead of one for int8).
    kwargs["disable_model_save"] = True
    keras_model, facts = run_onnx2tf(onnx_path, work / "cwd", sample_path, kwargs)
    tensor_names = facts.pop("tensor_names")
    calibration = None
    if precision == "int8":
        calibration = np.load(str(calib_path)).astype(np.float32)
        if calibration.ndim != 4 or len(calibration) == 0:
            raise ConversionError(f"calibration data must be (N, 3, H, W) with N >= 1, got "
                                  f"shape {list(calibration.shape)}")
        if layout == "NHWC":
            calibration = calibration.transpose(0, 2, 3, 1)
    with network_guard() as attempts:
        data, calibrated = _to_tflite(keras_model, precision, calibration, int8_io, per_channel)
    if attempts:
        raise ConversionError(f"the TFLite converter tried to reach the network ({attempts[0]})")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_bytes(data)
    _rename_io(out_path, inputs, outputs)
    details = io_details(out_path)
    quant = None
    if calibrated is not None and calibrated_path:
        # the ONNX I/O names in the calibrated model too, so every re-quantized model has them
        Path(calibrated_path).write_bytes(calibrated)
        _rename_io(Path(calibrated_path), inputs, outputs)
    if precision == "int8":
        weights = "per-channel" if per_channel else "per-tensor"
        quant = {"scheme": f"full integer int8, {weights} weights, per-tensor activations "
                           "(min/max calibration)",
                 "calibration_inputs": int(len(calibration)),
                 "io": "int8" if int8_io else "float32"}
    return {"precision": precision, "layout": layout,
            "int8_io": bool(int8_io and precision == "int8"),
            "ops": op_counts(out_path), **details, "versions": _versions(),
            "quantization": quant, "bytes": out_path.stat().st_size,
            "onnx_inputs": [[n, s] for n, s in inputs],
            "onnx_outputs": [[n, s] for n, s in outputs], "offline": facts,
            "tensor_names": tensor_names}


def _to_tflite(model: Any, precision: str, calibration: np.ndarray | None, int8_io: bool,
               per_channel: bool = True) -> tuple[bytes, bytes | None]:
    """The Keras model onnx2tf built, to .tflite bytes with onnx2tf's converter settings:
    builtin ops plus TF Select as a fallback (refused afterwards by :func:`graph_problems`, with
    the ops named), fp16 = float16 weights, int8 = full-integer with a representative dataset
    (per-channel weights, TFLite's default) and float32 or int8 I/O. Also returns, for int8,
    the calibrated float model the int8 one was quantized from (None otherwise)."""
    import tensorflow as tf

    from targets.tflite import quantize as tflite_quantize

    # The Keras model as one frozen concrete function, not ``from_keras_model``: that path
    # writes a legacy Keras SavedModel first, whose per-layer Python configs (onnx2tf's layers
    # hold their constants as lists) took 9.7 of its 10.3 s on MobileNetV2-128; the frozen
    # function gives the same ops and bit-identical outputs in 0.7 s. The signature the
    # SavedModel path would add is written by :func:`_rename_io`.
    function = tf.function(lambda *inputs: model(inputs), input_signature=[
        tf.TensorSpec(t.shape, t.dtype, t.name) for t in model.inputs])
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function.get_concrete_function()])
    converter.unfold_batchmatmul = False
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS,
                                           tf.lite.OpsSet.SELECT_TF_OPS]
    if precision == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif precision == "int8":
        assert calibration is not None
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
                                               tf.lite.OpsSet.SELECT_TF_OPS]
        converter._experimental_disable_per_channel = not per_channel
    try:
        if precision != "int8":
            return converter.convert(), None
        calibrated = tflite_quantize.calibrate(converter, calibration)
        return tflite_quantize.quantize_calibrated(calibrated, per_channel=per_channel,
                                                   int8_io=int8_io), calibrated
    except Exception as exc:
        lines = [line.strip() for line in str(exc).splitlines() if "error" in line.lower()]
        detail = (lines or str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise ConversionError(f"the TFLite converter failed ({precision}): {detail}") from exc


if __name__ == "__main__":  # debugging aid: python -m targets.tflite.convert '{json kwargs}'
    print(json.dumps(convert(**json.loads(sys.argv[1])), indent=1))
