"""count_params / count_macs / fp32_bytes on hand-computable modules and on real models."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from pipeline.models import MobileNetV1, count_macs, count_params, fp32_bytes


def _tiny() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),  # 8·3·9 = 216 params
        nn.BatchNorm2d(8),  # 16 params, 16 float buffers + 1 int64
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8),  # depthwise: 8·9 + 8 = 80 params
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),  # 80 + 10 = 90 params
    )


def test_count_params_exact() -> None:
    assert count_params(_tiny()) == 216 + 16 + 80 + 90


def test_count_params_counts_shared_parameters_once() -> None:
    lin = nn.Linear(4, 4)
    assert count_params(nn.Sequential(lin, lin)) == 20


def test_count_macs_exact_on_hand_computed_model() -> None:
    res = 16
    conv = res * res * 8 * 3 * 9  # full conv: H·W·Cout·Cin·k²
    dw = res * res * 8 * 9  # depthwise: H·W·C·k²
    fc = 8 * 10
    assert count_macs(_tiny(), res) == conv + dw + fc


def test_count_macs_strided_and_batch_one() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1, bias=False))
    assert count_macs(model, 32) == 16 * 16 * 4 * 3 * 9
    assert count_macs(model, 33) == 17 * 17 * 4 * 3 * 9


def test_count_macs_leaves_model_untouched() -> None:
    model = _tiny().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    count_macs(model, 16)
    assert model.training
    after = model.state_dict()
    assert all(v.device.type == "cpu" for v in after.values())
    assert all(torch.equal(before[k], after[k]) for k in before)
    count_macs(model.eval(), 16)
    assert not model.training


def test_count_macs_scales_with_resolution_squared() -> None:
    # Every V1 layer's output is (res / stride)² when res is a multiple of 32; the FC is constant.
    model = MobileNetV1(width_mult=0.25, num_classes=10).eval()
    fc = 256 * 10
    assert count_macs(model, 128) - fc == 4 * (count_macs(model, 64) - fc)


def test_count_macs_rejects_bad_resolution() -> None:
    with pytest.raises(ValueError):
        count_macs(_tiny(), 0)


def test_fp32_bytes() -> None:
    model = _tiny()
    assert fp32_bytes(model) == 4 * count_params(model)
    # BatchNorm's running mean and var are float; num_batches_tracked (int64) is not counted.
    assert fp32_bytes(model, include_buffers=True) == 4 * (count_params(model) + 16)
