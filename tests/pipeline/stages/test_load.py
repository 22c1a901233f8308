"""The load stage's helpers: seeded initial weights and safetensors round trips."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from pipeline.artifact import Artifact, sha256_file
from pipeline.context import RunContext
from pipeline.stages.load import build_reference_model, materialize, save_weights


def test_built_in_init_is_seeded_and_reproducible(tiny_config) -> None:
    ctx = RunContext(tiny_config())
    a, b = build_reference_model(ctx), build_reference_model(ctx)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(),
                                                 b.state_dict().values()))
    assert not a.training


def test_saved_weights_are_deterministic_and_reload(tiny_config, tmp_path: Path) -> None:
    ctx = RunContext(tiny_config())
    model = build_reference_model(ctx)
    save_weights(model, tmp_path / "a.safetensors")
    save_weights(model, tmp_path / "b.safetensors")
    assert sha256_file(tmp_path / "a.safetensors") == sha256_file(tmp_path / "b.safetensors")
    rebuilt = materialize(ctx, Artifact("weights", "", tmp_path / "a.safetensors"))
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        assert torch.equal(rebuilt(x), model(x))


def test_tied_weights_can_be_saved(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    model[1].weight = model[0].weight                 # shared storage
    save_weights(model, tmp_path / "tied.safetensors")
    assert (tmp_path / "tied.safetensors").stat().st_size > 0
