"""Runner state checks and the target registry."""
from __future__ import annotations

import numpy as np
import pytest

from targets.base import Runner, RunnerStateError, Target, register, registered_targets


class Doubler(Runner):
    runtime = "test-doubler"

    def activate_impl(self) -> None:
        self.activations = getattr(self, "activations", 0) + 1

    def input_names_impl(self) -> list[str]:
        return ["input"]

    def infer_impl(self, feeds):
        return {"output": feeds["input"] * 2}


def test_runner_must_be_active() -> None:
    runner = Doubler()
    with pytest.raises(RunnerStateError, match="outside its `with` block"):
        runner.infer({"input": np.ones(2)})
    with runner:
        assert runner.infer({"input": np.ones(2)})["output"].tolist() == [2.0, 2.0]
        with pytest.raises(RunnerStateError, match="already active"):
            runner.__enter__()
    assert not runner.is_active


def test_registry_finds_onnx_and_refuses_duplicates() -> None:
    targets = registered_targets()
    assert "onnx" in targets and targets["onnx"].suffixes == (".onnx",)

    class Impostor(Target):
        name = "onnx"
        platform = "x"
        precisions = ("fp32",)
        suffixes = (".x",)

        def stages(self, ctx, precisions):
            return []

        def runner(self, path, threads):
            raise NotImplementedError

    with pytest.raises(ValueError, match="registered twice"):
        register(Impostor)
