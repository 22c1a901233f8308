"""BatchNorm folding on the exported graph."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.program import export_program
from pipeline.stages.fuse import _count, fold_batchnorm


def _randomise_bn(model: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            module.weight.data.uniform_(0.5, 2)
            module.bias.data.uniform_(-1, 1)
    return model.eval()


class Functional(nn.Module):
    """BatchNorm called functionally, a conv with bias, and a conv whose output has two users."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=True)
        self.register_buffer("mean", torch.randn(8))
        self.register_buffer("var", torch.rand(8) + 0.5)
        self.gamma = nn.Parameter(torch.rand(8) + 0.5)
        self.beta = nn.Parameter(torch.randn(8))
        self.branch = nn.Conv2d(8, 8, 1)
        self.bn = nn.BatchNorm2d(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.batch_norm(self.conv(x), self.mean, self.var, self.gamma, self.beta, False, 0.1, 1e-5)
        z = self.branch(y)
        return self.bn(z) + z  # z has two users: this BN must not be folded


def _fold(model: nn.Module) -> tuple[dict, int, dict, torch.Tensor, torch.Tensor]:
    program, _ = export_program(model, 16)
    gm = program.module()
    before = _count(gm)
    folded = fold_batchnorm(gm)
    x = torch.randn(3, 3, 16, 16)
    return before, folded, _count(gm), model(x), gm(x)


def test_sequential_conv_bn_act_is_folded_exactly() -> None:
    model = _randomise_bn(nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU6(),
        nn.Conv2d(8, 8, 3, groups=8, padding=1, bias=False), nn.BatchNorm2d(8), nn.Hardswish(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5)))
    before, folded, after, ref, out = _fold(model)
    assert (before["batch_norm"], folded, after["batch_norm"]) == (2, 2, 0)
    assert after["conv_activation_pairs"] == 2
    scale = (ref.max() - ref.min()).item()
    assert (out - ref).abs().max().item() / scale < 1e-5


def test_functional_bn_folds_but_shared_conv_output_does_not() -> None:
    model = _randomise_bn(Functional())
    before, folded, after, ref, out = _fold(model)
    assert before["batch_norm"] == 2 and folded == 1 and after["batch_norm"] == 1
    assert torch.allclose(out, ref, atol=1e-5, rtol=1e-5)


def test_refolded_program_reexports_with_dynamic_batch() -> None:
    model = _randomise_bn(nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4)))
    program, _ = export_program(model, 16)
    gm = program.module()
    fold_batchnorm(gm)
    again, dynamic = export_program(gm, 16)
    assert dynamic
    for batch in (1, 5):
        x = torch.randn(batch, 3, 16, 16)
        assert torch.allclose(again.module()(x), model(x), atol=1e-5)
