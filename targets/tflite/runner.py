"""The LiteRT interpreter as a Runner, and the quantization helpers its feeds need."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from targets.base import Runner


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype: np.dtype) -> np.ndarray:
    """float -> integer tensor with the tensor's own affine parameters (round half to even,
    as TFLite's reference quantizer does, then clamp to the dtype's range)."""
    info = np.iinfo(dtype)
    q = np.round(np.asarray(x, np.float32) / np.float32(scale)) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return ((np.asarray(q, np.int32) - zero_point) * np.float32(scale)).astype(np.float32)


def detect_layout(shape: list[int] | tuple[int, ...]) -> str | None:
    """NHWC or NCHW for a 4-D image input shape; None when not 4-D. Three channels decide
    first, then 1 or 4; NHWC when still ambiguous (e.g. a 3x3 image)."""
    if len(shape) != 4:
        return None
    for channels in ((3,), (1, 4)):
        if shape[3] in channels and shape[1] not in channels:
            return "NHWC"
        if shape[1] in channels and shape[3] not in channels:
            return "NCHW"
    return "NHWC"


class LiteRTRunner(Runner):
    """LiteRT interpreter (``ai_edge_litert``) with its default XNNPACK delegate.

    Feeds are the pipeline's float32 NCHW arrays: they are transposed to the model's layout and,
    for integer inputs, quantized with the input tensor's scale/zero-point; integer outputs are
    dequantized with theirs. The model's batch is 1 (the mobile convention), so a batch of N is
    run as N invocations.
    """

    runtime = "litert-xnnpack"
    runtime_modules = ("ai_edge_litert.interpreter",)

    def __init__(self, path: Path, threads: int = 1, layout: str | None = None) -> None:
        super().__init__(threads)
        self.path = Path(path)
        self.layout = layout            # None: read from the model's input shape
        self._interpreter = None
        self._all_tensors = None
        self._inputs: list[dict[str, Any]] = []
        self._outputs: list[dict[str, Any]] = []
        self.xnnpack = False

    def activate_impl(self) -> None:
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=str(self.path), num_threads=self.threads)
        interpreter.allocate_tensors()
        self._interpreter = interpreter
        self._inputs = interpreter.get_input_details()
        self._outputs = interpreter.get_output_details()
        try:  # a delegated partition appears as an extra node named DELEGATE
            ops = interpreter._get_ops_details()
        except Exception:  # a private API: never let it break a run
            ops = []
        # XNNPACK is the only delegate the CPU interpreter applies by default (none is loaded)
        names = {(op.get("op_name") or "").upper() for op in ops}
        self.xnnpack = bool(names & {"DELEGATE", "TFLITEXNNPACKDELEGATE"})
        if self.layout is None:
            self.layout = detect_layout(list(self._inputs[0]["shape"])) if self._inputs else None
        shape = list(self._inputs[0]["shape"]) if self._inputs else []
        self.max_batch = int(shape[0]) if shape else 1   # the base class runs larger batches in chunks

    def deactivate_impl(self) -> None:
        self._interpreter = None
        self._all_tensors = None

    def input_names_impl(self) -> list[str]:
        return [d["name"] for d in self._inputs]

    def _set(self, detail: dict[str, Any], value: np.ndarray) -> None:
        value = np.asarray(value, np.float32)
        if value.ndim == 4 and self.layout == "NHWC":
            value = value.transpose(0, 2, 3, 1)
        dtype = np.dtype(detail["dtype"])
        if dtype.kind in "iu":
            scale, zero_point = detail["quantization"]
            value = quantize(value, scale, zero_point, dtype)
        else:
            value = value.astype(dtype)
        self._interpreter.set_tensor(detail["index"], np.ascontiguousarray(value))

    def _get(self, detail: dict[str, Any]) -> np.ndarray:
        value = self._interpreter.get_tensor(detail["index"])
        if np.dtype(detail["dtype"]).kind in "iu":
            scale, zero_point = detail["quantization"]
            return dequantize(value, scale, zero_point)
        return np.array(value, dtype=np.float32)

    def tensors_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every op's output tensor, by its TFLite name, dequantized, in the model's layout:
        a second interpreter keeps all tensors (``experimental_preserve_all_tensors``) and
        loads no delegate, whose kernels would free or fuse them."""
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        if self._all_tensors is None:
            self._all_tensors = Interpreter(
                model_path=str(self.path), num_threads=self.threads,
                experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
                experimental_preserve_all_tensors=True)
            self._all_tensors.allocate_tensors()
        interpreter = self._all_tensors
        main = self._interpreter
        self._interpreter = interpreter         # _set writes into the interpreter in use
        try:
            self.infer_impl(feeds)
        finally:
            self._interpreter = main
        details = {d["index"]: d for d in interpreter.get_tensor_details()}
        found: dict[str, np.ndarray] = {}
        for op in interpreter._get_ops_details():    # the only listing of op outputs
            for index in op["outputs"]:
                detail = details.get(index)
                if detail is None or np.dtype(detail["dtype"]).kind not in "fiu":
                    continue
                value = interpreter.get_tensor(index)
                scale, zero_point = detail["quantization"]
                if np.dtype(detail["dtype"]).kind in "iu":
                    if not scale:
                        continue                  # an integer index tensor, not an activation
                    value = dequantize(value, scale, zero_point)
                found[detail["name"]] = np.array(value, dtype=np.float32)
        return found

    def infer_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        by_name = {d["name"]: d for d in self._inputs}
        batch = int(np.asarray(next(iter(feeds.values()))).shape[0])
        if batch != self.max_batch:
            raise ValueError(f"the model takes a batch of {self.max_batch}, got {batch}")
        for name, value in feeds.items():
            self._set(by_name[name], np.asarray(value))
        self._interpreter.invoke()
        return {detail["name"]: self._get(detail) for detail in self._outputs}
