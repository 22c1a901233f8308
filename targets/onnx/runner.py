"""ONNX Runtime's CPU execution provider as a Runner."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from targets.base import Runner


class OrtRunner(Runner):
    """ONNX Runtime CPU session, all graph optimisations on, ``threads`` intra-op threads."""

    runtime = "onnxruntime"
    runtime_modules = ("onnxruntime", "pipeline.onnx_guard")

    def __init__(self, path: Path, threads: int = 1) -> None:
        super().__init__(threads)
        self.path = Path(path)
        self._session = None

    def activate_impl(self) -> None:
        import onnxruntime as ort

        from pipeline.onnx_guard import check_onnx_file

        check_onnx_file(self.path)      # parses, and any external data stays in its folder
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        self._session = ort.InferenceSession(str(self.path), options,
                                             providers=["CPUExecutionProvider"])
        first = self._session.get_inputs()[0].shape
        # a fixed batch (a model exported without a dynamic axis) runs larger feeds in chunks
        self.max_batch = first[0] if first and isinstance(first[0], int) and first[0] > 0 \
            else None

    def deactivate_impl(self) -> None:
        self._session = None

    def input_names_impl(self) -> list[str]:
        return [i.name for i in self._session.get_inputs()]

    def infer_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [o.name for o in self._session.get_outputs()]
        values = self._session.run(names, {k: np.ascontiguousarray(v, dtype=np.float32)
                                           for k, v in feeds.items()})
        return dict(zip(names, values))
