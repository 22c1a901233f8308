"""torch.export capture: dynamic batch when the model allows it, static otherwise."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from pipeline.program import export_program, load_program, save_program


class FixedBatch(nn.Module):
    """Reshapes to a constant batch of 1, so a dynamic batch dimension cannot be exported."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).reshape(1, 4 * 6 * 6)


def test_dynamic_batch_program_round_trips(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten()).eval()
    program, dynamic = export_program(model, 8)
    assert dynamic
    save_program(program, tmp_path / "p.pt2")
    loaded = load_program(tmp_path / "p.pt2").module()
    for batch in (1, 3):
        x = torch.randn(batch, 3, 8, 8)
        assert torch.equal(loaded(x), model(x))


def test_fixed_batch_model_falls_back_to_static_export() -> None:
    model = FixedBatch().eval()
    program, dynamic = export_program(model, 8)
    assert not dynamic
    x = torch.randn(1, 3, 8, 8)
    assert torch.equal(program.module()(x), model(x))
