"""Worker for test_mutations.py: feeds seeded mutants of real ONNX, TFLite, safetensors and YAML
files to the product's readers, in-process, and prints one JSON line per mutant.

Run in its own process so that a crash in native code shows up as the worker dying, not as a
lost test session. Outcomes: ``pass``/``fail`` (a parity verdict), ``ok`` (read fine),
``refused`` (a clean UserInputError / RuntimeLoadError with one line), ``traceback`` (any other
exception: a bug), ``unpickled`` (a full unpickler was reached: a bug).
"""
from __future__ import annotations

import json
import pickle
import random
import sys
import traceback
from pathlib import Path
from typing import Callable

import numpy as np

#: Mutants per format; TFLite's go through a child process each (as verify runs them), so fewer.
MUTANTS = {"onnx": 60, "tflite": 20, "safetensors": 60, "yaml": 60}


class Unpickled(Exception):
    """A full (unrestricted) unpickler was asked to run."""


def _forbid_pickle() -> None:
    """Any use of pickle's own unpickler from here on is recorded as a bug (torch's
    weights_only loader has its own restricted unpickler and is allowed)."""
    def refuse(*_args, **_kwargs):
        raise Unpickled("pickle's unrestricted unpickler was called")

    pickle.loads = refuse
    pickle.load = refuse

    class Refusing(pickle.Unpickler):
        def __init__(self, *args, **kwargs):
            raise Unpickled("pickle.Unpickler was constructed")

    pickle.Unpickler = Refusing


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One of: flip bytes, truncate, insert junk, duplicate or zero a chunk, plant an extreme
    32-bit integer (length fields, offsets, dimensions)."""
    buf = bytearray(data)
    kind = rng.randrange(6)
    at = rng.randrange(max(1, len(buf)))
    if kind == 0:
        for _ in range(rng.randint(1, 8)):
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
    elif kind == 1:
        del buf[at:]
    elif kind == 2:
        buf[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    elif kind == 3:
        size = rng.randint(1, 256)
        buf[at:at] = buf[at:at + size]
    elif kind == 4:
        size = rng.randint(1, 256)
        buf[at:at + size] = bytes(len(buf[at:at + size]))
    else:
        value = rng.choice([0xFFFFFFFF, 0x7FFFFFFF, 0x80000000, 0x10000000])
        buf[at:at + 4] = value.to_bytes(4, "little")
    return bytes(buf)


def _classify(action: Callable[[], str]) -> tuple[str, str]:
    from pipeline.errors import UserInputError
    from targets.base import RuntimeLoadError

    try:
        return action(), ""
    except Unpickled as exc:
        return "unpickled", str(exc)
    except (UserInputError, RuntimeLoadError) as exc:
        text = str(exc)
        return ("refused" if "\n" not in text and len(text) < 2000 else "traceback"), text[:300]
    except Exception:  # noqa: BLE001 - exactly what the test is looking for
        return "traceback", traceback.format_exc()[-1500:]


def onnx_seed(folder: Path) -> tuple[Path, Path]:
    """A small CNN in ONNX (conv, relu, pool, gemm) and its reference record."""
    from onnx import TensorProto, helper, numpy_helper

    from pipeline.data import ParityInputs
    from pipeline.reference import Reference
    from targets.onnx import OrtRunner

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n) for n, s in
             (("w", (4, 3, 3, 3)), ("b", (4,)), ("fw", (10, 4)), ("fb", (10,)))]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["batch", 3, 16, 16])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, ["batch", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    path = folder / "seed.onnx"
    path.write_bytes(model.SerializeToString())
    batch = rng.standard_normal((6, 3, 16, 16)).astype(np.float32)
    with OrtRunner(path) as runner:
        out = runner.infer({"x": batch})["y"]
    reference = folder / "reference.safetensors"
    Reference(ParityInputs([f"i{i}" for i in range(6)], ["photo"] * 6, batch),
              {"y": out}).save(reference)
    return path, reference


def tflite_seed(folder: Path) -> tuple[Path, Path]:
    """A small CNN converted by TensorFlow's own TFLite converter, and its reference record."""
    import tensorflow as tf

    from pipeline.data import ParityInputs
    from pipeline.reference import Reference
    from targets.tflite import LiteRTRunner

    tf.keras.utils.set_random_seed(0)
    inputs = tf.keras.Input((16, 16, 3), batch_size=1)
    x = tf.keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(10)(x))
    path = folder / "seed.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    batch = np.random.default_rng(1).standard_normal((4, 3, 16, 16)).astype(np.float32)
    with LiteRTRunner(path, 1, "NHWC") as runner:
        out = runner.infer({runner.input_names()[0]: batch})
    reference = folder / "reference_tflite.safetensors"
    Reference(ParityInputs([f"i{i}" for i in range(4)], ["photo"] * 4, batch),
              {"y": next(iter(out.values()))}).save(reference)
    return path, reference


def main(root: Path) -> None:
    """Write the seeds into ``root`` (which must be empty), then every format's mutants."""
    import torch
    from safetensors.torch import save_file
    from torch import nn

    from pipeline.checkpoint import apply_state_dict, read_state_dict
    from pipeline.config import load_config
    from pipeline.parity import tolerance_for
    from pipeline.verify_artifact import check_in_child, check_isolated

    onnx_path, reference = onnx_seed(root)
    tflite_path, tflite_reference = tflite_seed(root)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2))
    weights = root / "seed.safetensors"
    save_file(net.state_dict(), str(weights))
    config = root / "seed.yaml"
    config.write_text("model: mobilenet_v2\nwidth: 0.35\nresolution: 64\ntargets: [onnx]\n"
                      "precisions: [fp32, int8]\nbench: {warmup: 10, runs: 50, batch: 4}\n"
                      "tolerances:\n  int8: {min_cosine: 0.98}\n")
    tolerance = tolerance_for("fp32").model_dump()

    def onnx_check(path: Path) -> str:
        return check_in_child(str(path), str(reference), tolerance, 1)["verdict"]

    def tflite_check(path: Path) -> str:
        """LiteRT does not verify a model's flatbuffer (a mutant can crash it in-process), so
        verify runs it in a child process; so does this check, the same way."""
        return check_isolated(path, tflite_reference, tolerance_for("fp32"), 1, 120)["verdict"]

    def weights_check(path: Path) -> str:
        apply_state_dict(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4),
                                       nn.Linear(4, 2)), read_state_dict(path), path)
        return "ok"

    def yaml_check(path: Path) -> str:
        load_config(path, {})
        return "ok"

    _forbid_pickle()
    cases = [("onnx", onnx_path, onnx_check), ("tflite", tflite_path, tflite_check),
             ("safetensors", weights, weights_check), ("yaml", config, yaml_check)]
    for name, seed, check in cases:
        rng = random.Random(f"mobile-export:{name}")
        data = seed.read_bytes()
        print(json.dumps({"format": name, "mutant": -1, "outcome": _classify(
            lambda: check(seed))[0]}), flush=True)            # the seed itself
        for index in range(MUTANTS[name]):
            folder = root / "mutants" / name / str(index)
            folder.mkdir(parents=True)
            path = folder / seed.name
            path.write_bytes(mutate(data, rng))
            print(json.dumps({"format": name, "mutant": index, "outcome": "started"}),
                  flush=True)
            outcome, detail = _classify(lambda: check(path))
            print(json.dumps({"format": name, "mutant": index, "outcome": outcome,
                              "detail": detail}), flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
