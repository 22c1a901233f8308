"""MobileNetV2: torchvision parity (parameter count, state_dict keys and shapes, init)."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from pipeline.models import MobileNetV2, count_params
from pipeline.models.mobilenet_v2 import InvertedResidual

#: torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.meta["num_params"].
TORCHVISION_V2_PARAMS = 3_504_872

#: From torchvision/models/mobilenetv2.py: 52 BatchNorms (stem, 2 in the t=1 block, 3 in each of
#: the 16 t=6 blocks, head) × 5 entries (weight, bias, running_mean, running_var,
#: num_batches_tracked) + 52 bias-free conv weights + classifier.1 weight and bias = 314.
TORCHVISION_V2_KEYS = 314

#: A sample of torchvision mobilenet_v2() state_dict keys and shapes (first, middle, last layers).
TORCHVISION_V2_SAMPLE: dict[str, tuple[int, ...]] = {
    "features.0.0.weight": (32, 3, 3, 3),
    "features.0.1.weight": (32,),
    "features.0.1.num_batches_tracked": (),
    "features.1.conv.0.0.weight": (32, 1, 3, 3),
    "features.1.conv.0.1.running_mean": (32,),
    "features.1.conv.1.weight": (16, 32, 1, 1),
    "features.1.conv.2.bias": (16,),
    "features.2.conv.0.0.weight": (96, 16, 1, 1),
    "features.2.conv.1.0.weight": (96, 1, 3, 3),
    "features.2.conv.2.weight": (24, 96, 1, 1),
    "features.2.conv.3.running_var": (24,),
    "features.9.conv.1.0.weight": (384, 1, 3, 3),
    "features.14.conv.0.0.weight": (576, 96, 1, 1),
    "features.17.conv.2.weight": (320, 960, 1, 1),
    "features.18.0.weight": (1280, 320, 1, 1),
    "features.18.1.bias": (1280,),
    "classifier.1.weight": (1000, 1280),
    "classifier.1.bias": (1000,),
}


def test_parameter_count_matches_torchvision() -> None:
    assert count_params(MobileNetV2()) == TORCHVISION_V2_PARAMS


def test_state_dict_matches_torchvision_layout() -> None:
    sd = MobileNetV2().state_dict()
    assert len(sd) == TORCHVISION_V2_KEYS
    for key, shape in TORCHVISION_V2_SAMPLE.items():
        assert key in sd, key
        assert tuple(sd[key].shape) == shape, key
    assert sum(k.endswith("num_batches_tracked") for k in sd) == 52
    # t = 1 block has no expansion layer; nothing in the classifier but the Linear.
    assert "features.1.conv.3.weight" not in sd
    classifier = [k for k in sd if k.startswith("classifier")]
    assert classifier == ["classifier.1.weight", "classifier.1.bias"]


def test_structure() -> None:
    model = MobileNetV2()
    assert len(model.features) == 19
    blocks = list(model.features[1:18])
    assert all(isinstance(b, InvertedResidual) for b in blocks)
    residual = [i for i, b in enumerate(model.features) if getattr(b, "use_res_connect", False)]
    assert residual == [3, 5, 6, 8, 9, 10, 12, 13, 15, 16]
    strided = [i for i, b in enumerate(model.features) if getattr(b, "stride", 1) == 2]
    assert strided == [2, 4, 7, 14]
    acts = [m for m in model.modules() if isinstance(m, (nn.ReLU, nn.ReLU6, nn.Hardswish))]
    assert acts and all(type(a) is nn.ReLU6 for a in acts)
    assert isinstance(model.classifier[0], nn.Dropout) and model.classifier[0].p == 0.2


@pytest.mark.parametrize(
    ("width", "last_channel", "stem"),
    [(1.4, 1792, 48), (1.0, 1280, 32), (0.5, 1280, 16), (0.35, 1280, 16)],
)
def test_width_multiplier_and_last_channel(width: float, last_channel: int, stem: int) -> None:
    model = MobileNetV2(width_mult=width)
    assert model.last_channel == last_channel
    assert model.features[0][0].out_channels == stem
    assert model.classifier[1].in_features == last_channel


def test_round_nearest() -> None:
    model = MobileNetV2(width_mult=0.35, round_nearest=1, num_classes=10)
    assert model.features[0][0].out_channels == 11  # 32 · 0.35 = 11.2
    assert model.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 10)


def test_init_matches_torchvision() -> None:
    torch.manual_seed(0)
    model = MobileNetV2()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
        elif isinstance(m, nn.Conv2d):
            assert m.bias is None
    head = model.features[18][0].weight  # kaiming_normal_, fan_out = 1280 · 1 · 1
    assert head.std().item() == pytest.approx(math.sqrt(2 / 1280), rel=0.05)
    fc = model.classifier[1]
    assert fc.weight.std().item() == pytest.approx(0.01, rel=0.05)
    assert torch.all(fc.bias == 0)


def test_forward_tiny_and_load_round_trip() -> None:
    a = MobileNetV2(width_mult=0.35, num_classes=10).eval()
    b = MobileNetV2(width_mult=0.35, num_classes=10).eval()
    b.load_state_dict(a.state_dict(), strict=True)
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        out = a(x)
        assert torch.equal(out, b(x))
    assert out.shape == (1, 10)


def test_dropout_argument() -> None:
    assert MobileNetV2(dropout=0.5).classifier[0].p == 0.5


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        InvertedResidual(16, 16, stride=3, expand_ratio=6)
    with pytest.raises(ValueError):
        MobileNetV2(width_mult=0)
    with pytest.raises(ValueError):
        MobileNetV2(inverted_residual_setting=[])
