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


def _target(name: str, module: str) -> type[Target]:
    class Impostor(Target):
        platform = "x"
        precisions = ("fp32",)
        suffixes = (".x",)

        def stages(self, ctx, precisions):
            return []

        def runner(self, path, threads):
            raise NotImplementedError

    Impostor.name = name
    Impostor.__module__ = module
    return Impostor


def test_registry_finds_onnx_and_refuses_duplicates() -> None:
    targets = registered_targets()
    assert "onnx" in targets and targets["onnx"].suffixes == (".onnx",)
    with pytest.raises(ValueError, match="registered twice"):
        register(_target("onnx", "targets.onnx.impostor"))


def test_a_target_must_live_in_the_package_of_its_name() -> None:
    with pytest.raises(ValueError, match="a target lives in the package targets.mobile"):
        register(_target("mobile", "targets.onnx"))
    with pytest.raises(ValueError, match="targets.mobile"):
        register(_target("mobile", "somewhere.else"))


def test_target_names_come_from_the_packages_without_importing_them() -> None:
    import subprocess
    import sys

    code = ("import sys; from targets.base import target_names; print(target_names()); "
            "print(sorted(m for m in sys.modules if m.startswith('targets.')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    names, loaded = done.stdout.strip().splitlines()
    assert names == str(["coreml", "onnx", "tensorrt", "tflite"])
    assert loaded == str(["targets.base"])


class _Batcher(Runner):
    """Records the batch of every infer_impl call; output = input's sum per sample."""

    runtime = "test"
    max_batch = 3

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []

    def activate_impl(self) -> None:
        pass

    def input_names_impl(self) -> list[str]:
        return ["x"]

    def infer_impl(self, feeds):
        self.calls.append(len(feeds["x"]))
        return {"y": feeds["x"].reshape(len(feeds["x"]), -1).sum(1, keepdims=True)}


def test_the_base_class_checks_feeds_and_runs_large_batches_in_chunks() -> None:
    batch = np.arange(7 * 2, dtype=np.float32).reshape(7, 2)
    with _Batcher() as runner:
        out = runner.infer({"x": batch})
        assert runner.calls == [3, 3, 1]
        np.testing.assert_array_equal(out["y"], batch.sum(1, keepdims=True))
        with pytest.raises(ValueError, match=r"unknown \['z'\], missing \['x'\]"):
            runner.infer({"z": batch})
        with pytest.raises(ValueError, match="same leading batch"):
            runner.infer({"x": np.float32(1.0)})
