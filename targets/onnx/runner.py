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
        self._all_outputs = None

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
        self._all_outputs = None

    def input_names_impl(self) -> list[str]:
        return [i.name for i in self._session.get_inputs()]

    def tensors_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every float node output, by ONNX tensor name (a second session in which each is a
        graph output, as Polygraphy's ``--onnx-outputs mark all`` does; marking an output keeps
        it from being fused away, so ORT computes each layer's own tensor)."""
        if self._all_outputs is None:
            self._all_outputs = self._marked_session()
        session = self._all_outputs
        names = [o.name for o in session.get_outputs()]
        values = session.run(names, {k: np.ascontiguousarray(v, dtype=np.float32)
                                     for k, v in feeds.items()})
        return {name: value for name, value in zip(names, values)
                if np.asarray(value).dtype.kind == "f"}

    def _marked_session(self) -> object:
        import onnx
        import onnxruntime as ort

        model = onnx.load(str(self.path))    # checked when the runner was activated
        declared = {o.name for o in model.graph.output}
        for node in model.graph.node:
            for name in node.output:
                if name and name not in declared:
                    model.graph.output.append(onnx.ValueInfoProto(name=name))
                    declared.add(name)
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        return ort.InferenceSession(model.SerializeToString(), options,
                                    providers=["CPUExecutionProvider"])

    def infer_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [o.name for o in self._session.get_outputs()]
        values = self._session.run(names, {k: np.ascontiguousarray(v, dtype=np.float32)
                                           for k, v in feeds.items()})
        return dict(zip(names, values))
