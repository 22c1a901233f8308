"""Core ML runners: the MIL reference evaluator (any platform) and MLModel.predict (macOS)."""
from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from targets.base import Runner

ON_MACOS = sys.platform == "darwin"
#: how a parity record names a check by Core ML itself (anything else is a proxy for it)
RUNTIME_PREFIX = "Core ML (MLModel.predict)"
PREPROCESSING_KEY = "com.mobile-export.preprocessing"


def preprocessing_of(spec: Any) -> tuple[bool, np.ndarray | None, np.ndarray | None]:
    """(image input?, mean, std) from a package's spec (as written by the converter)."""
    image = spec.description.input[0].type.WhichOneof("Type") == "imageType"
    meta = spec.description.metadata.userDefined.get(PREPROCESSING_KEY)
    if not meta:
        return image, None, None
    values = json.loads(meta)
    return (image, np.asarray(values["mean"], np.float32).reshape(1, 3, 1, 1),
            np.asarray(values["std"], np.float32).reshape(1, 3, 1, 1))


def class_labels(spec: Any) -> list[str] | None:
    """The labels of a Core ML classifier (from its ``classify`` op), in score order."""
    if spec.WhichOneof("Type") != "mlProgram" or "main" not in spec.mlProgram.functions:
        return None
    function = spec.mlProgram.functions["main"]
    for op in function.block_specializations[function.opset].operations:
        if op.type == "classify":
            for binding in op.inputs["classes"].arguments:
                if binding.WhichOneof("binding") == "value":
                    return [item.immediateValue.tensor.strings.values[0]
                            for item in binding.value.immediateValue.list.values]
    return None


def to_pixels(batch: np.ndarray, mean: np.ndarray | None, std: np.ndarray | None) -> np.ndarray:
    """Normalised NCHW inputs -> the 0..255 RGB pixel values an ImageType input takes."""
    if mean is None or std is None:
        raise ValueError(f"the package has an image input but no {PREPROCESSING_KEY} metadata; "
                         "cannot turn normalised parity inputs into pixels")
    return ((batch * std + mean) * 255.0).astype(np.float32)


class MilEvaluatorRunner(Runner):
    """Runs a package (folder or archive) on the MIL reference evaluator, one sample at a time
    (the program has a fixed batch of 1)."""

    runtime = "mil-reference-evaluator"
    runtime_modules = ("torch", "targets.coreml.mlpackage", "targets.coreml.mil")
    max_batch = 1

    def __init__(self, path: Path, threads: int = 1) -> None:
        super().__init__(threads)
        self.path = Path(path)
        self.evaluator = None
        self._stack: contextlib.ExitStack | None = None
        self._saved_threads = 0

    def activate_impl(self) -> None:
        import torch

        from targets.coreml import mlpackage
        from targets.coreml.mil import MilEvaluator

        self._stack = contextlib.ExitStack()
        try:
            folder = self._stack.enter_context(mlpackage.opened(self.path))
            self.evaluator = MilEvaluator(folder)
        except BaseException:
            self._stack.close()
            raise
        self._image, self._mean, self._std = preprocessing_of(self.evaluator.spec)
        self._saved_threads = torch.get_num_threads()
        torch.set_num_threads(self.threads)

    def deactivate_impl(self) -> None:
        import torch

        torch.set_num_threads(self._saved_threads)
        if self._stack is not None:
            self._stack.close()
        self._stack = None

    @property
    def unsupported_ops(self) -> list[str]:
        return self.evaluator.unsupported_ops if self.evaluator is not None else []

    def input_names_impl(self) -> list[str]:
        return [name for name, _, _ in self.evaluator.inputs]

    def infer_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        (name, array), = feeds.items()
        array = np.asarray(array, dtype=np.float32)
        if self._image:
            array = to_pixels(array, self._mean, self._std)
        # one sample (max_batch): a classifier's label (a string) is not compared
        return {key: value.astype(np.float32) for key, value in
                self.evaluator.run({name: array}).items() if value.dtype.kind in "fiub"}


    def tensors_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every op's float output, by MIL variable name (the evaluator's ``observe``)."""
        (name, array), = feeds.items()
        array = np.asarray(array, dtype=np.float32)
        if self._image:
            array = to_pixels(array, self._mean, self._std)
        found: dict[str, np.ndarray] = {}

        def keep(var: str, _op_type: str, value: Any) -> None:
            if value.is_floating_point():
                found[var] = value.detach().float().numpy().copy()

        self.evaluator.run({name: array}, observe=keep)
        return found


class CoremlRuntimeRunner(Runner):
    """``MLModel.predict`` on macOS with the given compute units (``CPU_ONLY``, ``ALL``, ...)."""

    runtime = "coreml"
    runtime_modules = ("coremltools", "targets.coreml.mlpackage")

    def __init__(self, path: Path, threads: int = 1, compute_units: str = "CPU_ONLY") -> None:
        super().__init__(threads)
        self.path = Path(path)
        self.compute_units = compute_units
        self.runtime = f"coreml-{compute_units.lower()}"
        self._stack: contextlib.ExitStack | None = None
        self._model = None

    def activate_impl(self) -> None:  # pragma: no cover - macOS only
        import coremltools as ct

        from targets.coreml import mlpackage

        self._stack = contextlib.ExitStack()
        folder = self._stack.enter_context(mlpackage.opened(self.path))
        spec, _ = mlpackage.load_spec(folder)
        self._image, self._mean, self._std = preprocessing_of(spec)
        self._input = spec.description.input[0].name
        self._outputs = [o.name for o in spec.description.output
                         if o.type.WhichOneof("Type") != "stringType"]
        self._labels = class_labels(spec)
        self._model = ct.models.MLModel(str(folder),
                                        compute_units=getattr(ct.ComputeUnit, self.compute_units))

    def deactivate_impl(self) -> None:  # pragma: no cover - macOS only
        self._model = None
        if self._stack is not None:
            self._stack.close()
        self._stack = None

    def input_names_impl(self) -> list[str]:  # pragma: no cover - macOS only
        return [self._input]

    def infer_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:  # pragma: no cover
        from PIL import Image

        (array,) = feeds.values()
        array = np.asarray(array, dtype=np.float32)
        if self._image:  # Core ML takes 8-bit pixels: rounding here is part of what ships
            pixels = np.clip(np.rint(to_pixels(array, self._mean, self._std)), 0, 255)
            samples = [{self._input: Image.fromarray(p.transpose(1, 2, 0).astype(np.uint8))}
                       for p in pixels]
        else:
            samples = [{self._input: sample[None]} for sample in array]
        results = self._model.predict(samples) if len(samples) > 1 else [self._model.predict(samples[0])]
        outputs: dict[str, list[np.ndarray]] = {}
        for result in results:
            for key in self._outputs:
                value = result[key]
                if isinstance(value, dict):   # a classifier's scores: label -> score
                    value = np.asarray([[value[label] for label in (self._labels or value)]],
                                       dtype=np.float32)
                outputs.setdefault(key, []).append(np.asarray(value, dtype=np.float32))
        return {key: np.concatenate(values, axis=0) for key, values in outputs.items()}
