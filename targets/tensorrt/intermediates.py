"""Every layer's tensor on TensorRT: an engine rebuilt from the node's source ONNX with every
network tensor marked as an output (Polygraphy's ``--trt-outputs mark all``).

A serialized engine keeps only its declared outputs (fused layers leave no tensor behind), so
the intermediate tensors come from a second engine built with the node's own settings (the
plan's precision flags and profile) from the ONNX file the node was built from. Marking a
tensor keeps TensorRT from fusing across it: as with ONNX Runtime, each layer's own tensor is
computed (Polygraphy documents the same caveat). The TensorRT ONNX parser names every tensor
after its ONNX tensor, so the join is by name.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from targets.base import Runner


class MarkedEngineRunner(Runner):  # pragma: no cover - needs an NVIDIA GPU and TensorRT
    """TensorRT with every tensor of the network marked as an output."""

    runtime = "tensorrt (every tensor marked)"
    runtime_modules = ("tensorrt",)

    def __init__(self, onnx_path: Path, settings: dict[str, Any], threads: int = 1) -> None:
        super().__init__(threads)
        self.onnx_path = Path(onnx_path)
        self.settings = settings
        self._runner = None

    def activate_impl(self) -> None:
        from polygraphy import constants
        from polygraphy.backend.trt import (CreateConfig, EngineFromNetwork,
                                            ModifyNetworkOutputs, NetworkFromOnnxPath, Profile,
                                            TrtRunner)

        profile = self.settings["profile"]
        config = CreateConfig(**self.settings["flags"], profiles=[Profile().add(
            profile["input"], min=tuple(profile["min"]), opt=tuple(profile["opt"]),
            max=tuple(profile["max"]))])
        network = ModifyNetworkOutputs(NetworkFromOnnxPath(str(self.onnx_path)),
                                       outputs=constants.MARK_ALL)
        self._runner = TrtRunner(EngineFromNetwork(network, config=config))
        self._runner.activate()
        self.max_batch = int(profile["max"][0])

    def deactivate_impl(self) -> None:
        if self._runner is not None:
            self._runner.deactivate()
        self._runner = None

    def input_names_impl(self) -> list[str]:
        return list(self._runner.get_input_metadata().keys())

    def infer_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        (name, array), = feeds.items()
        outputs = self._runner.infer({name: np.ascontiguousarray(array, dtype=np.float32)})
        return {key: np.array(value, dtype=np.float32) for key, value in outputs.items()
                if np.asarray(value).dtype.kind == "f"}

    def tensors_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.infer_impl(feeds)
