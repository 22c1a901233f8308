"""PyTorch runners: the eager reference and the torch.export program, both on CPU."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from targets.base import Runner

INPUT_NAME = "input"


def _to_numpy_outputs(result: object) -> dict[str, np.ndarray]:
    if isinstance(result, torch.Tensor):
        return {"output": result.detach().numpy()}
    if isinstance(result, (tuple, list)):
        return {f"output_{i}": t.detach().numpy() for i, t in enumerate(result)}
    if isinstance(result, dict):
        return {str(k): v.detach().numpy() for k, v in result.items()}
    raise TypeError(f"model returned {type(result).__name__}; expected tensors")


class TorchRunner(Runner):
    """Runs an ``nn.Module`` (eager, or the module of an ExportedProgram) under inference mode."""

    runtime = "torch-eager"
    runtime_modules = ("torch",)

    def __init__(self, module: nn.Module, threads: int = 1, runtime: str | None = None) -> None:
        super().__init__(threads)
        self.module = module
        if runtime:
            self.runtime = runtime
        self._saved_threads = 0

    def activate_impl(self) -> None:
        self._saved_threads = torch.get_num_threads()
        torch.set_num_threads(self.threads)

    def deactivate_impl(self) -> None:
        torch.set_num_threads(self._saved_threads)

    def input_names_impl(self) -> list[str]:
        return [INPUT_NAME]

    def infer_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        (array,) = feeds.values()
        with torch.inference_mode():
            return _to_numpy_outputs(self.module(torch.from_numpy(np.ascontiguousarray(array))))
