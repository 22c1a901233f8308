"""The TFLite target without a conversion: contract, LiteRT runner (layout, int8 I/O) on tiny
hand-built .tflite files, sidecar, error reporting, graph checks and the offline guard."""
from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest

from pipeline.isolate import IsolatedCallError
from targets.tflite.inspect import graph_problems, op_counts
from targets.tflite.offline import NetworkBlockedError, network_guard
from targets.tflite import TfliteTarget
from targets.tflite.runner import LiteRTRunner, dequantize, detect_layout, quantize
from targets.tflite.sidecar import build_sidecar, labels_for
from targets.tflite.stage import TfliteConvertStage, _clear_error


# -- a .tflite built by hand (flatbuffer object API, no TensorFlow) ----------------------------


def reshape_model(path: Path, shape: list[int], out_shape: list[int], *, dtype: str = "float32",
                  quant_in: tuple[float, int] | None = None,
                  quant_out: tuple[float, int] | None = None) -> Path:
    """One RESHAPE op: ``input`` of ``shape`` -> ``output`` of ``out_shape`` (a raw copy, so
    integer outputs carry the input's bytes and dequantize with the output's own parameters)."""
    from ai_edge_litert import schema_py_generated as fb
    from ai_edge_litert.tools import flatbuffer_utils

    kind = {"float32": fb.TensorType.FLOAT32, "int8": fb.TensorType.INT8}[dtype]

    def quant(params):
        if params is None:
            return None
        q = fb.QuantizationParametersT()
        q.scale, q.zeroPoint = [params[0]], [params[1]]
        return q

    def tensor(name, dims, params):
        t = fb.TensorT()
        t.shape, t.type, t.buffer, t.name, t.quantization = dims, kind, 0, name, quant(params)
        return t

    code = fb.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = fb.BuiltinOperator.RESHAPE
    code.version = 1
    options = fb.ReshapeOptionsT()
    options.newShape = out_shape
    op = fb.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0], [1]
    op.builtinOptionsType, op.builtinOptions = fb.BuiltinOptions.ReshapeOptions, options
    graph = fb.SubGraphT()
    graph.tensors = [tensor("input", shape, quant_in), tensor("output", out_shape, quant_out)]
    graph.inputs, graph.outputs, graph.operators, graph.name = [0], [1], [op], "main"
    model = fb.ModelT()
    model.version, model.operatorCodes, model.subgraphs = 3, [code], [graph]
    model.buffers = [fb.BufferT()]
    model.description = "test"
    flatbuffer_utils.write_model(model, str(path))
    return path


def test_runner_transposes_nchw_feeds_for_an_nhwc_model(tmp_path: Path) -> None:
    path = reshape_model(tmp_path / "nhwc.tflite", [1, 2, 2, 3], [1, 12])
    x = np.arange(2 * 3 * 2 * 2, dtype=np.float32).reshape(2, 3, 2, 2)  # NCHW, batch 2
    with TfliteTarget().runner(path, threads=2) as runner:
        assert runner.layout == "NHWC" and runner.input_names() == ["input"]
        out = runner.infer({"input": x})
    assert list(out) == ["output"] and out["output"].shape == (2, 12)
    np.testing.assert_array_equal(out["output"], x.transpose(0, 2, 3, 1).reshape(2, 12))


def test_runner_feeds_an_nchw_model_as_is(tmp_path: Path) -> None:
    path = reshape_model(tmp_path / "nchw.tflite", [1, 3, 4, 4], [1, 48])
    x = np.random.default_rng(0).standard_normal((1, 3, 4, 4)).astype(np.float32)
    with LiteRTRunner(path, 1) as runner:
        assert runner.layout == "NCHW"
        np.testing.assert_array_equal(runner.infer({"input": x})["output"], x.reshape(1, 48))


def test_runner_quantizes_int8_inputs_and_dequantizes_outputs_with_their_own_params(
        tmp_path: Path) -> None:
    q_in, q_out = (0.05, -3), (0.1, 7)
    path = reshape_model(tmp_path / "int8.tflite", [1, 2, 2, 3], [1, 12], dtype="int8",
                         quant_in=q_in, quant_out=q_out)
    x = np.linspace(-8, 4, 12, dtype=np.float32).reshape(1, 3, 2, 2)
    with LiteRTRunner(path, 1) as runner:
        got = runner.infer({"input": x})["output"]
    raw = quantize(x.transpose(0, 2, 3, 1), *q_in, np.int8).reshape(1, 12)
    np.testing.assert_array_equal(got, dequantize(raw, *q_out))
    assert raw.min() == -128 and raw.max() < 127           # saturates at the int8 range
    assert got.dtype == np.float32


def test_quantize_round_trip_and_saturation() -> None:
    x = np.array([-10.0, -0.26, 0.0, 0.24, 0.26, 10.0], np.float32)
    q = quantize(x, 0.5, 1, np.int8)
    assert q.tolist() == [-19, 0, 1, 1, 2, 21]
    np.testing.assert_allclose(dequantize(q, 0.5, 1), [-10.0, -0.5, 0, 0, 0.5, 10.0])
    assert quantize(np.array([1e6, -1e6], np.float32), 0.1, 0, np.int8).tolist() == [127, -128]


def test_layout_detection() -> None:
    assert detect_layout([1, 224, 224, 3]) == "NHWC"
    assert detect_layout([1, 3, 224, 224]) == "NCHW"
    assert detect_layout([1, 10]) is None


def test_op_counts_read_from_the_flatbuffer(tmp_path: Path) -> None:
    path = reshape_model(tmp_path / "m.tflite", [1, 2, 2, 3], [1, 12])
    assert op_counts(path) == {"RESHAPE": 1}


# -- target contract ---------------------------------------------------------------------------


def test_target_contract(tiny_config, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.context import RunContext

    target = TfliteTarget()
    assert (target.name, target.platform, target.suffixes) == ("tflite", "android", (".tflite",))
    assert target.precisions == ("fp32", "fp16", "int8")
    assert target.unavailable_reason() is None
    assert [target.publish_name(f"tflite_{p}", p, ".tflite") for p in target.precisions] == \
        ["model_fp32.tflite", "model_fp16.tflite", "model_int8.tflite"]
    ctx = RunContext(tiny_config(targets=["tflite"], precisions=["int8", "fp32"]))
    stages = target.stages(ctx, ("int8", "fp32"))
    assert [s.name for s in stages] == ["tflite:fp32", "tflite:int8"]
    for s in stages:
        assert isinstance(s, TfliteConvertStage)
        assert (s.stage, s.target, s.inputs) == ("convert_tflite", "tflite", ("onnx", "reference"))
        assert s.outputs == (f"tflite_{s.precision}",) and s.layout == "NHWC"
    assert stages[1].config()["int8_io"] is False and "calibration" in stages[1].config()
    assert "int8_io" not in stages[0].config()

    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnx2tf" else real(name, *a))
    assert "onnx2tf" in target.unavailable_reason()


def test_stage_reads_layout_and_int8_io_from_the_config(tiny_config) -> None:
    from pipeline.context import RunContext

    config = tiny_config(targets=["tflite"], precisions=["int8"], tflite_layout="NCHW",
                         tflite_int8_io=True)
    stage = TfliteConvertStage(RunContext(config), "int8")
    assert (stage.layout, stage.int8_io) == ("NCHW", True)
    assert stage.config()["layout"] == "NCHW" and stage.config()["int8_io"] is True


# -- graph checks, errors ----------------------------------------------------------------------


def test_transposes_around_every_conv_are_refused() -> None:
    assert graph_problems({"CONV_2D": 10, "DEPTHWISE_CONV_2D": 7, "TRANSPOSE": 1}) == []
    problems = graph_problems({"CONV_2D": 3, "TRANSPOSE": 6})
    assert len(problems) == 1 and "6 TRANSPOSE ops for 3 convolutions" in problems[0]
    flex = graph_problems({"CONV_2D": 2, "CUSTOM:FlexErf": 1})
    assert flex and "FlexErf" in flex[0]


def test_converter_failure_becomes_one_clear_line_plus_tail() -> None:
    tail = ["2025 W tensorflow noise", "Traceback (most recent call last):", "  File x",
            "ConversionError: onnx2tf 1.29.24 cannot convert ONNX op 'CastLike' (node 'c')"]
    reason = "onnx2tf 1.29.24 cannot convert ONNX op 'CastLike' (node 'c')"
    exc = IsolatedCallError("tflite:fp32", "mnv2", f"ConversionError: {reason}", tail,
                            {"type": "ConversionError", "message": reason, "user_input": False})
    error = _clear_error("tflite:fp32", "mnv2", exc)
    first, *rest = str(error).splitlines()
    assert first == ("stage 'tflite:fp32' failed: onnx2tf 1.29.24 cannot convert ONNX op "
                     "'CastLike' (node 'c')")
    assert "last converter output:" in rest[0] and "tensorflow noise" in "\n".join(rest)
    crash = IsolatedCallError("tflite:int8", "mnv2", "the converter process crashed (SIGSEGV)",
                              ["Fatal Python error"])
    assert str(_clear_error("tflite:int8", "mnv2", crash)).splitlines()[0] == (
        "stage 'tflite:int8' failed: the converter process crashed (SIGSEGV) while converting "
        "mnv2: Fatal Python error")


def test_network_guard_refuses_and_records_outbound_connections() -> None:
    import requests

    with network_guard() as attempts:
        with pytest.raises(NetworkBlockedError):
            socket.create_connection(("github.com", 443), timeout=1)
        with pytest.raises(requests.exceptions.RequestException):
            requests.get("https://github.com/PINTO0309/onnx2tf/releases/download/x.npy",
                         timeout=(1.0, 1.0))
        with pytest.raises(NetworkBlockedError):
            socket.getaddrinfo("s3.us-central-1.wasabisys.com", 443)
    assert attempts[0] == "github.com:443" and len(attempts) >= 3
    assert socket.getaddrinfo.__module__ == "socket"      # restored afterwards


# -- sidecar -----------------------------------------------------------------------------------


def _node(precision: str, path: Path, dtype: str = "float32", quant=None) -> dict:
    tensor = {"name": "input", "shape": [1, 64, 64, 3], "dtype": dtype, "quantization": quant,
              "layout": "NHWC"}
    return {"name": f"tflite:{precision}", "precision": precision,
            "artifact": {"path": str(path), "sha256": "x", "bytes": 1},
            "parity": {"verdict": "pass", "max_rel": 1e-6, "cosine": 1.0, "top1_agreement": 1.0},
            "info": {"int8_io": dtype == "int8", "sidecar": {
                "inputs": [tensor],
                "outputs": [{"name": "output", "shape": [1, 10], "dtype": dtype,
                             "quantization": quant}],
                "preprocessing": {"resize": 73, "crop": 64, "mean": [0.485, 0.456, 0.406],
                                  "std": [0.229, 0.224, 0.225], "interpolation": "bilinear",
                                  "scale": "pixel / 255, then (x - mean) / std"},
                "labels": None}}}


def test_sidecar_describes_every_published_file_and_keeps_valid_older_entries(
        tmp_path: Path) -> None:
    from pipeline.artifact import sha256_file

    folder = tmp_path / "android" / "m"
    folder.mkdir(parents=True)
    for p in ("fp32", "fp16", "int8"):
        (folder / f"model_{p}.tflite").write_bytes(p.encode() * 10)
    target = TfliteTarget()
    target.write_sidecar(folder, [_node("fp32", folder / "model_fp32.tflite"),
                                  _node("int8", folder / "model_int8.tflite", "int8",
                                        {"scale": 0.0186, "zero_point": -14})])
    sidecar = json.loads((folder / "model.json").read_text())
    assert sidecar["input"]["name"] == "input" and sidecar["input"]["layout"] == "NHWC"
    assert sidecar["input"]["shape"] == [1, 64, 64, 3]
    assert sidecar["input"]["mean"] == [0.485, 0.456, 0.406]
    assert sidecar["input"]["std"] == [0.229, 0.224, 0.225]
    assert set(sidecar["models"]) == {"fp32", "int8"}
    int8 = sidecar["models"]["int8"]
    assert int8["file"] == "model_int8.tflite" and int8["input"]["dtype"] == "int8"
    assert int8["input"]["quantization"] == {"scale": 0.0186, "zero_point": -14}
    assert int8["sha256"] == sha256_file(folder / "model_int8.tflite")
    assert "labels" in sidecar and not list(folder.glob(".model.json*"))  # atomic: no temp left
    # a later run publishing fp16 only keeps the still-valid entries of the earlier one ...
    target.write_sidecar(folder, [_node("fp16", folder / "model_fp16.tflite")])
    assert set(json.loads((folder / "model.json").read_text())["models"]) == \
        {"fp32", "fp16", "int8"}
    # ... but not one whose file has changed since
    (folder / "model_int8.tflite").write_bytes(b"changed")
    assert set(build_sidecar(folder, [_node("fp16", folder / "model_fp16.tflite")])["models"]) \
        == {"fp32", "fp16"}


def test_labels_come_from_the_labelled_evaluation_set_when_there_is_one(
        tiny_config, tmp_path: Path) -> None:
    from PIL import Image

    from pipeline.context import RunContext
    assert labels_for(RunContext(tiny_config(dataset="digits"))) == [str(i) for i in range(10)]
    assert labels_for(RunContext(tiny_config())) is None
    folder = tmp_path / "eval"
    for name in ("cat", "dog"):
        (folder / name).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(folder / name / "a.png")
    assert labels_for(RunContext(tiny_config(eval=folder, num_classes=2))) == ["cat", "dog"]
    assert labels_for(RunContext(tiny_config(eval=folder))) is None      # 2 names for 10 classes
