"""In-memory models: the digest follows code, weights and attributes; the registry copies."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from pipeline import memory_model
from pipeline.errors import UserInputError
from pipeline.model_source import ModelSource, code_files


class Net(nn.Module):
    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.head = nn.Linear(4, 2)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x).mean((2, 3)) * self.scale)


class SameShapes(nn.Module):
    """Net's parameters, another forward."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.head = nn.Linear(4, 2)
        self.scale = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x).amax((2, 3)) * self.scale)


def seeded(cls: type = Net, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return cls(**kwargs)


def test_the_digest_is_stable_and_follows_weights_attributes_and_code() -> None:
    base = memory_model.module_digest(seeded())
    assert memory_model.module_digest(seeded()) == base
    changed = seeded()
    with torch.no_grad():
        changed.head.bias[0] += 1e-3
    assert memory_model.module_digest(changed) != base
    assert memory_model.module_digest(seeded(scale=2.0)) != base
    other = seeded(SameShapes)
    other.load_state_dict(seeded().state_dict())
    assert memory_model.module_digest(other) != base     # same weights, other code


def test_a_class_without_source_is_hashed_by_its_bytecode() -> None:
    namespace: dict = {"nn": nn}
    exec("class Typed(nn.Module):\n    def forward(self, x):\n        return x * 2\n", namespace)
    exec("class Other(nn.Module):\n    def forward(self, x):\n        return x * 3\n", namespace)
    one, two = namespace["Typed"](), namespace["Other"]()
    two.__class__.__qualname__ = one.__class__.__qualname__ = "Typed"
    assert memory_model.module_digest(one) != memory_model.module_digest(two)


def test_registered_models_are_private_copies_built_fresh() -> None:
    model = seeded()
    ref = memory_model.register(model)
    assert ref.startswith("memory:Net@") and memory_model.is_memory_ref(ref)
    with torch.no_grad():
        model.head.bias.zero_()             # the user's later edit does not reach the run
    built = memory_model.build(ref)
    assert not torch.equal(built.head.bias, model.head.bias) and not built.training
    assert memory_model.build(ref) is not built
    source = ModelSource(ref, 1.0, 32, 2)
    assert source.label == "Net_32" and not source.is_zoo and code_files(ref) == []
    assert torch.equal(source.build().head.weight, built.head.weight)


def test_unknown_refs_and_non_modules_are_clear_errors() -> None:
    with pytest.raises(UserInputError, match="in-memory model of another process"):
        memory_model.build("memory:Net@" + "0" * 64)
    with pytest.raises(UserInputError, match="not a dict"):
        memory_model.register({})   # type: ignore[arg-type]


def test_the_registry_keeps_only_the_most_recent_models() -> None:
    refs = []
    for scale in range(memory_model.MAX_REGISTERED + 2):
        refs.append(memory_model.register(seeded(scale=float(scale + 10))))
    with pytest.raises(UserInputError, match="another process"):
        memory_model.build(refs[0])             # the oldest copy was let go
    assert memory_model.build(refs[-1]).scale == float(memory_model.MAX_REGISTERED + 11)
