"""The MIL reference evaluator on hand-built ML Programs: each op against PyTorch, fp16 rounding,
compressed weights, blob reading, unknown ops (never a pass) and the op registry's rules.

Programs are written with coremltools' own protobuf definitions (no coremltools import, no
conversion), so these tests take seconds. The zoo's converted models are covered in
tests/targets/test_coreml.py.
"""
from __future__ import annotations

import json
import struct
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from targets.coreml.mil import (OPS, MilEvaluator, UnsupportedMilError, conform, mil_op)
from targets.coreml.mlpackage import PackageError, proto_modules

_DT = {np.dtype(np.float32): "FLOAT32", np.dtype(np.float16): "FLOAT16", np.dtype(np.int8): "INT8",
       np.dtype(np.uint8): "UINT8", np.dtype(np.int32): "INT32", np.dtype(np.bool_): "BOOL"}


class ProgramBuilder:
    """A minimal ML Program package writer for tests (one ``main`` function, one block)."""

    def __init__(self, opset: str = "CoreML7") -> None:
        self.pb = proto_modules()
        self.mil = self.pb.MIL_pb2
        self.opset = opset
        self.inputs: list[Any] = []
        self.operations: list[Any] = []
        self.blob = bytearray(struct.pack("<II", 0, 2) + bytes(56))
        self.count = 0

    def value_type(self, dtype: str, shape: list[int]) -> Any:
        vt = self.mil.ValueType()
        vt.tensorType.dataType = self.mil.DataType.Value(dtype)
        vt.tensorType.rank = len(shape)
        for size in shape:
            vt.tensorType.dimensions.add().constant.size = size
        return vt

    def value(self, array: Any, blob: bool = False) -> Any:
        value = self.mil.Value()
        if isinstance(array, str):
            value.type.CopyFrom(self.value_type("STRING", []))
            value.immediateValue.tensor.strings.values.append(array)
            return value
        array = np.asarray(array)
        dtype = _DT[array.dtype]
        value.type.CopyFrom(self.value_type(dtype, list(array.shape)))
        if blob:
            while len(self.blob) % 64:
                self.blob.append(0)
            offset = len(self.blob)
            data = array.tobytes()
            self.blob += struct.pack("<IIQQ", 0xDEADBEEF, 2, len(data), offset + 64) + bytes(40)
            self.blob += data
            self.count += 1
            value.blobFileValue.fileName = "@model_path/weights/weight.bin"
            value.blobFileValue.offset = offset
        elif array.dtype in (np.float16, np.int8, np.uint8):
            value.immediateValue.tensor.bytes.values = array.tobytes()
        elif array.dtype == np.float32:
            value.immediateValue.tensor.floats.values.extend(array.reshape(-1).tolist())
        elif array.dtype == np.bool_:
            value.immediateValue.tensor.bools.values.extend(array.reshape(-1).tolist())
        else:
            value.immediateValue.tensor.ints.values.extend(array.reshape(-1).tolist())
        return value

    def input(self, name: str, dtype: str, shape: list[int]) -> None:
        named = self.mil.NamedValueType(name=name)
        named.type.CopyFrom(self.value_type(dtype, shape))
        self.inputs.append(named)

    def const(self, name: str, array: Any, blob: bool = False) -> str:
        op = self.mil.Operation(type="const")
        value = self.value(array, blob)
        op.attributes["val"].CopyFrom(value)
        op.attributes["name"].CopyFrom(self.value(name))
        out = op.outputs.add(name=name)
        out.type.CopyFrom(value.type)
        self.operations.append(op)
        return name

    def op(self, op_type: str, inputs: dict[str, Any], outputs: list[tuple[str, str, list[int]]],
           attributes: dict[str, Any] | None = None) -> None:
        op = self.mil.Operation(type=op_type)
        for param, arg in inputs.items():
            names = arg if isinstance(arg, list) else [arg]
            for item in names:
                binding = op.inputs[param].arguments.add()
                if isinstance(item, str):
                    binding.name = item
                else:
                    binding.value.CopyFrom(self.value(item))
        for param, array in (attributes or {}).items():
            op.attributes[param].CopyFrom(self.value(array))
        op.attributes["name"].CopyFrom(self.value(outputs[0][0]))
        for name, dtype, shape in outputs:
            op.outputs.add(name=name).type.CopyFrom(self.value_type(dtype, shape))
        self.operations.append(op)

    def save(self, folder: Path, outputs: list[str]) -> Path:
        spec = self.pb.Model_pb2.Model()
        spec.specificationVersion = 8
        function = spec.mlProgram.functions["main"]
        function.opset = self.opset
        function.inputs.extend(self.inputs)
        block = function.block_specializations[self.opset]
        block.outputs.extend(outputs)
        block.operations.extend(self.operations)
        spec.mlProgram.version = 1
        data = folder / "Data" / "com.apple.CoreML"
        (data / "weights").mkdir(parents=True)
        (data / "model.mlmodel").write_bytes(spec.SerializeToString())
        struct.pack_into("<I", self.blob, 0, self.count)
        (data / "weights" / "weight.bin").write_bytes(bytes(self.blob))
        model_id, weights_id = str(uuid.uuid4()).upper(), str(uuid.uuid4()).upper()
        manifest = {"fileFormatVersion": "1.0.0", "rootModelIdentifier": model_id,
                    "itemInfoEntries": {
                        model_id: {"author": "com.apple.CoreML", "description": "spec",
                                   "name": "model.mlmodel",
                                   "path": "com.apple.CoreML/model.mlmodel"},
                        weights_id: {"author": "com.apple.CoreML", "description": "weights",
                                     "name": "weights", "path": "com.apple.CoreML/weights"}}}
        (folder / "Manifest.json").write_text(json.dumps(manifest))
        return folder


def _run(tmp_path: Path, build, feeds: dict[str, np.ndarray], outputs: list[str]) -> dict:
    builder = ProgramBuilder()
    build(builder)
    package = builder.save(tmp_path / "Model.mlpackage", outputs)
    evaluator = MilEvaluator(package)
    assert evaluator.unsupported_ops == []
    return evaluator.run(feeds)


RNG = np.random.default_rng(0)
X = RNG.standard_normal((1, 4, 7, 7)).astype(np.float32)


def _unary(op_type: str, shape=(1, 4, 7, 7), **params):
    def build(b: ProgramBuilder) -> None:
        b.input("x", "FLOAT32", list(shape))
        inputs = {"x": "x"}
        for key, value in params.items():
            inputs[key] = b.const(f"{key}_c", value)
        b.op(op_type, inputs, [("y", "FLOAT32", list(shape))])
    return build


@pytest.mark.parametrize("op_type, params, expected", [
    ("relu", {}, torch.relu),
    ("relu6", {}, lambda t: torch.clamp(t, 0, 6)),
    ("clip", {"alpha": np.float32(-0.5), "beta": np.float32(0.7)},
     lambda t: torch.clamp(t, -0.5, 0.7)),
    ("sigmoid", {}, torch.sigmoid),
    ("sigmoid_hard", {"alpha": np.float32(1 / 6), "beta": np.float32(0.5)},
     F.hardsigmoid),
    ("silu", {}, F.silu),
    ("tanh", {}, torch.tanh),
    ("softmax", {"axis": np.int32(1)}, lambda t: torch.softmax(t, 1)),
    ("reduce_mean", {"axes": np.array([-2, -1], np.int32), "keep_dims": np.bool_(True)},
     lambda t: t.mean((2, 3), keepdim=True)),
    ("reduce_max", {"axes": np.array([1], np.int32), "keep_dims": np.bool_(True)},
     lambda t: t.amax(1, keepdim=True)),
])
def test_unary_ops_match_torch(tmp_path: Path, op_type, params, expected) -> None:
    out_shape = list(expected(torch.from_numpy(X)).shape)

    def build(b: ProgramBuilder) -> None:
        b.input("x", "FLOAT32", list(X.shape))
        inputs = {"x": "x", **{k: b.const(f"{k}_c", v) for k, v in params.items()}}
        b.op(op_type, inputs, [("y", "FLOAT32", out_shape)])

    y = _run(tmp_path, build, {"x": X}, ["y"])["y"]
    np.testing.assert_allclose(y, expected(torch.from_numpy(X)).numpy(), rtol=1e-6, atol=1e-6)


def test_hard_swish_as_coremltools_writes_it(tmp_path: Path) -> None:
    """coremltools lowers hardswish to w = thresholded_relu(x, -3); mul(w, sigmoid_hard(w))."""
    def build(b: ProgramBuilder) -> None:
        b.input("x", "FLOAT32", list(X.shape))
        b.op("thresholded_relu", {"x": "x", "alpha": b.const("t", np.float32(-3))},
             [("w", "FLOAT32", list(X.shape))])
        b.op("sigmoid_hard", {"x": "w", "alpha": b.const("a", np.float32(1 / 6)),
                              "beta": b.const("b", np.float32(0.5))},
             [("h", "FLOAT32", list(X.shape))])
        b.op("mul", {"x": "w", "y": "h"}, [("y", "FLOAT32", list(X.shape))])

    x = X * 4
    y = _run(tmp_path, build, {"x": x}, ["y"])["y"]
    np.testing.assert_allclose(y, F.hardswish(torch.from_numpy(x)).numpy(), atol=1e-6)
    assert (x < -3).any() and (x > 3).any()


@pytest.mark.parametrize("size, stride, pad_type, pad, groups", [
    (7, 2, "same", None, 4),            # depthwise, odd input: pad (1, 1)
    (8, 2, "same", None, 4),            # even input: TF-style (0, 1)
    (7, 1, "valid", None, 1),
    (7, 2, "custom", [0, 1, 1, 0], 2),  # asymmetric, grouped
])
def test_conv_padding_strides_groups(tmp_path: Path, size, stride, pad_type, pad, groups) -> None:
    x = RNG.standard_normal((1, 4, size, size)).astype(np.float32)
    w = RNG.standard_normal((6 if groups != 4 else 4, 4 // groups, 3, 3)).astype(np.float32)
    bias = RNG.standard_normal(w.shape[0]).astype(np.float32)
    t = torch.from_numpy(x)
    if pad_type == "same":
        out = -(-size // stride)
        total = max((out - 1) * stride + 3 - size, 0)
        t = F.pad(t, (total // 2, total - total // 2) * 2)
    elif pad_type == "custom":
        t = F.pad(t, (pad[2], pad[3], pad[0], pad[1]))
    expected = F.conv2d(t, torch.from_numpy(w), torch.from_numpy(bias), stride=stride,
                        groups=groups).numpy()

    def build(b: ProgramBuilder) -> None:
        b.input("x", "FLOAT32", list(x.shape))
        inputs = {"x": "x", "weight": b.const("w", w, blob=True), "bias": b.const("b", bias),
                  "strides": b.const("s", np.array([stride, stride], np.int32)),
                  "pad_type": b.const("pt", pad_type),
                  "dilations": b.const("d", np.array([1, 1], np.int32)),
                  "groups": b.const("g", np.int32(groups))}
        if pad is not None:
            inputs["pad"] = b.const("p", np.array(pad, np.int32))
        b.op("conv", inputs, [("y", "FLOAT32", list(expected.shape))])

    y = _run(tmp_path, build, {"x": x}, ["y"])["y"]
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_pools_shapes_and_binary_ops(tmp_path: Path) -> None:
    w = RNG.standard_normal((3, 4)).astype(np.float32)
    bias = RNG.standard_normal(3).astype(np.float32)

    def build(b: ProgramBuilder) -> None:
        b.input("x", "FLOAT32", list(X.shape))
        b.op("avg_pool", {"x": "x", "kernel_sizes": b.const("k", np.array([7, 7], np.int32)),
                          "strides": b.const("s", np.array([1, 1], np.int32)),
                          "pad_type": b.const("pt", "valid"),
                          "exclude_padding_from_average": b.const("e", np.bool_(True))},
             [("pooled", "FLOAT32", [1, 4, 1, 1])])
        b.op("max_pool", {"x": "x", "kernel_sizes": b.const("k2", np.array([3, 3], np.int32)),
                          "strides": b.const("s2", np.array([2, 2], np.int32)),
                          "pad_type": b.const("pt2", "same")},
             [("maxed", "FLOAT32", [1, 4, 4, 4])])
        b.op("reshape", {"x": "pooled", "shape": b.const("shape", np.array([1, -1], np.int32))},
             [("flat", "FLOAT32", [1, 4])])
        b.op("linear", {"x": "flat", "weight": b.const("w", w), "bias": b.const("b", bias)},
             [("logits", "FLOAT32", [1, 3])])
        b.op("matmul", {"x": "flat", "y": b.const("wt", w),
                        "transpose_y": b.const("ty", np.bool_(True))},
             [("mm", "FLOAT32", [1, 3])])
        b.op("sub", {"x": "logits", "y": "mm"}, [("zero", "FLOAT32", [1, 3])])
        b.op("transpose", {"x": "x", "perm": b.const("perm", np.array([0, 2, 3, 1], np.int32))},
             [("nhwc", "FLOAT32", [1, 7, 7, 4])])
        b.op("concat", {"values": ["x", "x"], "axis": b.const("ax", np.int32(1)),
                        "interleave": b.const("il", np.bool_(False))},
             [("cat", "FLOAT32", [1, 8, 7, 7])])
        b.op("squeeze", {"x": "pooled", "axes": b.const("sq", np.array([2, 3], np.int32))},
             [("sq_out", "FLOAT32", [1, 4])])
        b.op("expand_dims", {"x": "sq_out", "axes": b.const("ex", np.array([-1], np.int32))},
             [("ex_out", "FLOAT32", [1, 4, 1])])
        b.op("real_div", {"x": "x", "y": b.const("two", np.float32(2))},
             [("half", "FLOAT32", list(X.shape))])

    names = ["pooled", "maxed", "logits", "zero", "nhwc", "cat", "ex_out", "half"]
    out = _run(tmp_path, build, {"x": X}, names)
    t = torch.from_numpy(X)
    np.testing.assert_allclose(out["pooled"], t.mean((2, 3), keepdim=True), atol=1e-6)
    np.testing.assert_allclose(out["maxed"], F.max_pool2d(F.pad(t, (1, 1, 1, 1), value=-np.inf),
                                                          3, 2), atol=0)
    expected_logits = out["pooled"].reshape(1, 4) @ w.T + bias
    np.testing.assert_allclose(out["logits"], expected_logits, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["zero"], bias[None], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(out["nhwc"], X.transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(out["cat"], np.concatenate([X, X], 1))
    assert out["ex_out"].shape == (1, 4, 1)
    np.testing.assert_allclose(out["half"], X / 2)


def test_fp16_values_are_rounded_after_every_op(tmp_path: Path) -> None:
    def build(b: ProgramBuilder) -> None:
        b.input("x", "FLOAT32", [1, 3])
        b.op("cast", {"x": "x", "dtype": b.const("dt", "fp16")}, [("h", "FLOAT16", [1, 3])])
        b.op("add", {"x": "h", "y": b.const("eps", np.array([1e-4], np.float16))},
             [("s", "FLOAT16", [1, 3])])
        b.op("cast", {"x": "s", "dtype": b.const("dt32", "fp32")}, [("y", "FLOAT32", [1, 3])])

    x = np.array([[1.0, 1000.1, 3.14159265]], np.float32)
    y = _run(tmp_path, build, {"x": x}, ["y"])["y"]
    expected = (x.astype(np.float16) + np.float16(1e-4)).astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(y, expected)
    assert y[0, 0] == 1.0                 # 1 + 1e-4 is 1 in fp16
    assert conform(torch.tensor([0.1]), "FLOAT16").item() == float(np.float16(0.1))


def test_compressed_weights_and_activation_quantization(tmp_path: Path) -> None:
    q = RNG.integers(-127, 128, size=(6, 4, 1, 1), dtype=np.int8)
    scale = RNG.uniform(0.01, 0.02, size=6).astype(np.float32)
    block_scale = RNG.uniform(0.01, 0.02, size=(6, 2, 1, 1)).astype(np.float32)
    x = RNG.standard_normal((1, 4, 5, 5)).astype(np.float32)

    def conv_inputs(b: ProgramBuilder, weight: str, suffix: str) -> dict:
        return {"weight": weight, "strides": b.const(f"s{suffix}", np.array([1, 1], np.int32)),
                "pad_type": b.const(f"p{suffix}", "valid"),
                "dilations": b.const(f"d{suffix}", np.array([1, 1], np.int32)),
                "groups": b.const(f"g{suffix}", np.int32(1))}

    def build(b: ProgramBuilder) -> None:
        b.input("x", "FLOAT32", list(x.shape))
        b.op("constexpr_affine_dequantize", {}, [("w16", "FLOAT32", [6, 4, 1, 1])], attributes={
            "quantized_data": q, "zero_point": np.int8(0), "scale": scale, "axis": np.int32(0)})
        b.op("constexpr_blockwise_shift_scale",
             {"data": b.const("qd", q, blob=True), "scale": b.const("bs", block_scale)},
             [("w18", "FLOAT32", [6, 4, 1, 1])])
        b.op("quantize", {"input": "x", "scale": b.const("as", np.float32(0.05)),
                          "output_dtype": b.const("od", "int8")}, [("xq", "INT8", list(x.shape))])
        b.op("dequantize", {"input": "xq", "scale": b.const("as2", np.float32(0.05))},
             [("xd", "FLOAT32", list(x.shape))])
        b.op("conv", {"x": "xd", **conv_inputs(b, "w16", "a")}, [("y16", "FLOAT32", [1, 6, 5, 5])])
        b.op("conv", {"x": "x", **conv_inputs(b, "w18", "b")}, [("y18", "FLOAT32", [1, 6, 5, 5])])

    out = _run(tmp_path, build, {"x": x}, ["y16", "y18"])
    w16 = q.astype(np.float32) * scale.reshape(6, 1, 1, 1)
    xd = np.clip(np.round(x / 0.05), -128, 127) * 0.05
    np.testing.assert_allclose(out["y16"], F.conv2d(torch.from_numpy(xd.astype(np.float32)),
                                                    torch.from_numpy(w16)).numpy(), atol=1e-5)
    w18 = q.astype(np.float32) * np.repeat(block_scale, 2, axis=1)
    np.testing.assert_allclose(out["y18"], F.conv2d(torch.from_numpy(x),
                                                    torch.from_numpy(w18)).numpy(), atol=1e-5)


def test_unknown_op_is_reported_and_never_runs(tmp_path: Path) -> None:
    builder = ProgramBuilder()
    builder.input("x", "FLOAT32", [1, 3])
    builder.op("erf_of_the_future", {"x": "x"}, [("y", "FLOAT32", [1, 3])])
    package = builder.save(tmp_path / "Model.mlpackage", ["y"])
    evaluator = MilEvaluator(package)
    assert evaluator.unsupported_ops == ["erf_of_the_future"]
    with pytest.raises(UnsupportedMilError, match="erf_of_the_future"):
        evaluator.run({"x": np.zeros((1, 3), np.float32)})


def test_a_truncated_weight_file_is_an_error(tmp_path: Path) -> None:
    builder = ProgramBuilder()
    builder.input("x", "FLOAT32", [1, 4])
    builder.op("linear", {"x": "x", "weight": builder.const("w", np.ones((8, 4), np.float32),
                                                            blob=True)}, [("y", "FLOAT32", [1, 8])])
    package = builder.save(tmp_path / "Model.mlpackage", ["y"])
    blob = package / "Data/com.apple.CoreML/weights/weight.bin"
    blob.write_bytes(blob.read_bytes()[:-16])
    with pytest.raises(PackageError, match="runs past the end"):
        MilEvaluator(package)


def test_registry_refuses_a_duplicate_op() -> None:
    assert {"conv", "linear", "add", "mul", "relu", "clip", "sigmoid", "sigmoid_hard", "silu",
            "thresholded_relu", "classify",
            "reduce_mean", "avg_pool", "reshape", "transpose", "concat", "cast", "quantize",
            "dequantize", "constexpr_affine_dequantize",
            "constexpr_blockwise_shift_scale"} <= set(OPS)
    with pytest.raises(ValueError, match="'relu' is registered twice"):
        @mil_op("relu")
        def another_relu(x):  # pragma: no cover - never registered
            return x
    assert OPS["relu"].fn.__name__ == "relu"
