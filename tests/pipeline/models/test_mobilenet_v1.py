"""MobileNetV1 against the paper's Table 1 and its cost formulas."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from pipeline.models import (
    ConvNormActivation,
    DepthwiseSeparable,
    MobileNetV1,
    count_macs,
    count_params,
    make_divisible,
)
from pipeline.models.mobilenet_v1 import V1_BLOCKS, v1_channels

#: Table 1 of the paper: (depthwise stride, pointwise output channels) of the 13 blocks.
TABLE_1 = [
    (1, 64), (2, 128), (1, 128), (2, 256), (1, 256), (2, 512),
    (1, 512), (1, 512), (1, 512), (1, 512), (1, 512), (2, 1024), (1, 1024),
]  # fmt: skip


def _analytic(width: float, resolution: int, num_classes: int = 1000) -> tuple[int, int]:
    """Params and Mult-Adds from the paper's formulas (Section 3.1), independent of the model code.

    Standard conv: D_K²·M·N params, D_K²·M·N·D_F² Mult-Adds; depthwise separable:
    D_K²·M + M·N params, (D_K²·M + M·N)·D_F² Mult-Adds; BatchNorm: 2 params per channel.
    """
    ch = lambda c: max(int(c * width), 8)  # noqa: E731 — TF-slim's depth() rule
    size = -(-resolution // 2)
    m = ch(32)
    params = 9 * 3 * m + 2 * m
    macs = 9 * 3 * m * size * size
    for stride, n_out in TABLE_1:
        n = ch(n_out)
        size = -(-size // stride)
        params += 9 * m + 2 * m + m * n + 2 * n
        macs += (9 * m + m * n) * size * size
        m = n
    params += m * num_classes + num_classes
    macs += m * num_classes
    return params, macs


def test_structure_follows_table_1() -> None:
    model = MobileNetV1()
    assert [(s, c) for c, s in V1_BLOCKS] == TABLE_1
    assert len(model.features) == 14
    stem = model.features[0]
    assert isinstance(stem, ConvNormActivation)
    assert (stem[0].in_channels, stem[0].out_channels, stem[0].stride) == (3, 32, (2, 2))
    in_ch = 32
    for block, (stride, out_ch) in zip(model.features[1:], TABLE_1):
        assert isinstance(block, DepthwiseSeparable)
        dw, pw = block.dw[0], block.pw[0]
        assert dw.groups == dw.in_channels == dw.out_channels == in_ch
        assert dw.kernel_size == (3, 3) and dw.stride == (stride, stride)
        assert pw.kernel_size == (1, 1) and (pw.in_channels, pw.out_channels) == (in_ch, out_ch)
        assert isinstance(block.dw[1], nn.BatchNorm2d) and isinstance(block.pw[1], nn.BatchNorm2d)
        in_ch = out_ch
    assert isinstance(model.classifier[0], nn.Dropout) and model.classifier[0].p == 0.001
    assert isinstance(model.classifier[1], nn.Linear)
    assert (model.classifier[1].in_features, model.classifier[1].out_features) == (1024, 1000)


def test_uses_relu_not_relu6() -> None:
    model = MobileNetV1()
    acts = [m for m in model.modules() if isinstance(m, (nn.ReLU, nn.ReLU6))]
    assert len(acts) == 1 + 2 * 13
    assert all(type(a) is nn.ReLU for a in acts)


def test_state_dict_keys() -> None:
    sd = MobileNetV1().state_dict()
    expected = {
        "features.0.0.weight": (32, 3, 3, 3),
        "features.0.1.running_mean": (32,),
        "features.1.dw.0.weight": (32, 1, 3, 3),
        "features.1.dw.1.weight": (32,),
        "features.1.pw.0.weight": (64, 32, 1, 1),
        "features.13.dw.0.weight": (1024, 1, 3, 3),
        "features.13.pw.1.running_var": (1024,),
        "classifier.1.weight": (1000, 1024),
        "classifier.1.bias": (1000,),
    }
    for key, shape in expected.items():
        assert tuple(sd[key].shape) == shape, key
    # Convolutions followed by BatchNorm have no bias.
    assert not any(k.endswith(".0.bias") and k.startswith("features") for k in sd)
    assert len(sd) == 6 + 13 * 12 + 2


@pytest.mark.parametrize("width", [1.0, 0.75, 0.5, 0.25])
def test_params_match_the_papers_formulas(width: float) -> None:
    assert count_params(MobileNetV1(width)) == _analytic(width, 224)[0]


def test_params_match_keras_mobilenet() -> None:
    # Keras' MobileNet(alpha=1.0) summary: 4,253,864 total = 4,231,976 trainable + 21,888
    # BatchNorm moving statistics; the trainable figure is exactly this model's parameter count.
    assert count_params(MobileNetV1()) == 4_231_976


@pytest.mark.parametrize(("width", "resolution"), [(0.25, 128), (0.5, 96), (0.25, 100)])
def test_macs_match_the_papers_formulas(width: float, resolution: int) -> None:
    model = MobileNetV1(width).eval()
    assert count_macs(model, resolution) == _analytic(width, resolution)[1]


@pytest.mark.parametrize("width", [0.25, 0.5, 0.75, 1.0])
def test_channel_rule_equals_make_divisible_for_standard_widths(width: float) -> None:
    for c in (32, 64, 128, 256, 512, 1024):
        assert v1_channels(c, width) == make_divisible(c * width, 8)


def test_channel_rule_for_non_standard_width() -> None:
    # TF-slim's int(c·α) with an 8-channel floor, not make_divisible: 32 · 0.3 = 9.6 → 9.
    assert v1_channels(32, 0.3) == 9 and make_divisible(32 * 0.3, 8) == 16
    assert v1_channels(32, 0.1) == 8
    model = MobileNetV1(0.3, num_classes=5).eval()
    assert model.features[0][0].out_channels == 9
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 5)


@pytest.mark.parametrize("resolution", [32, 33, 48, 64, 96, 97])
def test_forward_any_resolution_from_32(resolution: int) -> None:
    model = MobileNetV1(0.25, num_classes=10).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, resolution, resolution))
        fmap = model.features(torch.randn(1, 3, resolution, resolution))
    assert out.shape == (1, 10)
    assert fmap.shape[-1] == -(-resolution // 32) >= 1


def test_forward_batch_and_train_mode() -> None:
    model = MobileNetV1(0.25, num_classes=3).train()
    out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 3)
    out.sum().backward()
    assert model.features[0][0].weight.grad is not None


def test_state_dict_round_trip_and_init() -> None:
    a, b = MobileNetV1(0.25, num_classes=4), MobileNetV1(0.25, num_classes=4)
    b.load_state_dict(a.state_dict(), strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(a.eval()(x), b.eval()(x))
    bn = a.features[1].pw[1]
    assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0) and bn.eps == 1e-3
    assert torch.all(a.classifier[1].bias == 0)


@pytest.mark.parametrize("width", [0.0, -1.0])
def test_rejects_bad_width(width: float) -> None:
    with pytest.raises(ValueError):
        MobileNetV1(width)
