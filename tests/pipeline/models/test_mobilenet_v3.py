"""MobileNetV3-Large/Small: torchvision parity at α = 1 (parameter counts, state_dict layout, SE,
init) and TF-slim's width rule for α ≠ 1 (the rule of the paper's 0.75 models)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from pipeline.models import (
    ConvNormActivation,
    MobileNetV3,
    SqueezeExcitation,
    count_macs,
    count_params,
)
from pipeline.models.mobilenet_v3 import (
    InvertedResidual,
    mobilenet_v3_config,
    mobilenet_v3_head_channels,
    mobilenet_v3_large,
    mobilenet_v3_small,
)

#: torchvision MobileNet_V3_{Large,Small}_Weights.IMAGENET1K_V1.meta["num_params"].
TORCHVISION_PARAMS = {"large": 5_483_032, "small": 2_542_856}

#: Counted from torchvision/models/mobilenetv3.py: every Conv2dNormActivation holds 6 keys (conv
#: weight + 5 BatchNorm entries), every SE 4 (fc1/fc2 weight and bias), the classifier 4.
#: Large: stem 6 + blocks 296 (1×12, 6×18, 8×22) + head 6 + classifier 4 = 312.
#: Small: stem 6 + blocks 228 (1×16, 2×18, 8×22) + head 6 + classifier 4 = 244.
TORCHVISION_KEYS = {"large": 312, "small": 244}

TORCHVISION_SAMPLE: dict[str, dict[str, tuple[int, ...]]] = {
    "large": {
        "features.0.0.weight": (16, 3, 3, 3),
        "features.0.1.weight": (16,),
        "features.1.block.0.0.weight": (16, 1, 3, 3),  # no expansion: depthwise first
        "features.1.block.1.0.weight": (16, 16, 1, 1),
        "features.2.block.0.0.weight": (64, 16, 1, 1),
        "features.2.block.1.0.weight": (64, 1, 3, 3),
        "features.4.block.1.0.weight": (72, 1, 5, 5),
        "features.4.block.2.fc1.weight": (24, 72, 1, 1),  # make_divisible(72 // 4, 8) = 24
        "features.4.block.2.fc1.bias": (24,),
        "features.4.block.2.fc2.weight": (72, 24, 1, 1),
        "features.4.block.2.fc2.bias": (72,),
        "features.4.block.3.0.weight": (40, 72, 1, 1),
        "features.4.block.3.1.num_batches_tracked": (),
        "features.7.block.1.0.weight": (240, 1, 3, 3),
        "features.13.block.2.fc1.weight": (168, 672, 1, 1),
        "features.15.block.2.fc2.weight": (960, 240, 1, 1),
        "features.15.block.3.1.running_var": (160,),
        "features.16.0.weight": (960, 160, 1, 1),
        "classifier.0.weight": (1280, 960),
        "classifier.0.bias": (1280,),
        "classifier.3.weight": (1000, 1280),
        "classifier.3.bias": (1000,),
    },
    "small": {
        "features.0.0.weight": (16, 3, 3, 3),
        "features.1.block.0.0.weight": (16, 1, 3, 3),
        "features.1.block.1.fc1.weight": (8, 16, 1, 1),  # make_divisible(16 // 4, 8) = 8
        "features.1.block.1.fc2.weight": (16, 8, 1, 1),
        "features.1.block.2.0.weight": (16, 16, 1, 1),
        "features.2.block.0.0.weight": (72, 16, 1, 1),
        "features.4.block.1.0.weight": (96, 1, 5, 5),
        "features.4.block.2.fc1.weight": (24, 96, 1, 1),
        "features.9.block.2.fc1.weight": (72, 288, 1, 1),
        "features.11.block.2.fc1.weight": (144, 576, 1, 1),
        "features.11.block.3.0.weight": (96, 576, 1, 1),
        "features.12.0.weight": (576, 96, 1, 1),
        "classifier.0.weight": (1024, 576),
        "classifier.3.weight": (1000, 1024),
    },
}

#: Feature indices of the blocks with SE and with Hardswish (paper Tables 1 and 2).
SE_BLOCKS = {"large": [4, 5, 6, 11, 12, 13, 14, 15], "small": [1, 4, 5, 6, 7, 8, 9, 10, 11]}
HS_BLOCKS = {"large": list(range(7, 16)), "small": list(range(4, 12))}

BUILDERS = {"large": mobilenet_v3_large, "small": mobilenet_v3_small}


@pytest.mark.parametrize("arch", ["large", "small"])
def test_parameter_count_matches_torchvision(arch: str) -> None:
    assert count_params(BUILDERS[arch]()) == TORCHVISION_PARAMS[arch]


@pytest.mark.parametrize("arch", ["large", "small"])
def test_state_dict_matches_torchvision_layout(arch: str) -> None:
    sd = BUILDERS[arch]().state_dict()
    assert len(sd) == TORCHVISION_KEYS[arch]
    for key, shape in TORCHVISION_SAMPLE[arch].items():
        assert key in sd, key
        assert tuple(sd[key].shape) == shape, key
    assert [k for k in sd if k.startswith("classifier")] == [
        "classifier.0.weight",
        "classifier.0.bias",
        "classifier.3.weight",
        "classifier.3.bias",
    ]


@pytest.mark.parametrize("arch", ["large", "small"])
def test_se_placement_and_activations(arch: str) -> None:
    model = BUILDERS[arch]()
    blocks = {i: b for i, b in enumerate(model.features) if isinstance(b, InvertedResidual)}
    assert len(blocks) == {"large": 15, "small": 11}[arch]
    se = [i for i, b in blocks.items() if any(isinstance(m, SqueezeExcitation) for m in b.block)]
    assert se == SE_BLOCKS[arch]
    for i, b in blocks.items():
        # Expand and depthwise layers carry the block's nonlinearity; the projection is linear.
        *nonlinear, project = [c for c in b.block if isinstance(c, ConvNormActivation)]
        acts = {type(c[2]) for c in nonlinear}
        assert acts == ({nn.Hardswish} if i in HS_BLOCKS[arch] else {nn.ReLU}), i
        assert len(project) == 2 and isinstance(project[1], nn.BatchNorm2d)
    for m in model.modules():
        if isinstance(m, SqueezeExcitation):
            assert isinstance(m.scale_activation, nn.Hardsigmoid)
            assert isinstance(m.activation, nn.ReLU)
    assert isinstance(model.features[0][2], nn.Hardswish)
    assert isinstance(model.features[-1][2], nn.Hardswish)


def test_classifier_and_batchnorm_hyperparameters() -> None:
    model = mobilenet_v3_large(dropout=0.3)
    kinds = [type(m) for m in model.classifier]
    assert kinds == [nn.Linear, nn.Hardswish, nn.Dropout, nn.Linear]
    assert model.classifier[2].p == 0.3
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(bn.eps == 0.001 and bn.momentum == 0.01 for bn in bns)
    assert isinstance(model.avgpool, nn.AdaptiveAvgPool2d)


@pytest.mark.parametrize(
    ("arch", "width", "reduced_tail", "last_channel", "head"),
    [
        ("mobilenet_v3_large", 1.0, False, 1280, 960),
        ("mobilenet_v3_large", 0.75, False, 1280, 720),  # hidden layer exempt below α = 1
        ("mobilenet_v3_large", 0.5, False, 1280, 480),
        ("mobilenet_v3_large", 1.25, False, 1600, 1200),  # ... and scaled above it
        ("mobilenet_v3_large", 1.0, True, 640, 480),
        ("mobilenet_v3_large", 0.75, True, 640, 360),
        ("mobilenet_v3_small", 1.0, False, 1024, 576),
        ("mobilenet_v3_small", 0.75, False, 1024, 432),
        ("mobilenet_v3_small", 1.25, False, 1280, 720),
        ("mobilenet_v3_small", 1.0, True, 512, 288),
    ],
)
def test_last_channel_rule(
    arch: str, width: float, reduced_tail: bool, last_channel: int, head: int
) -> None:
    # TF-slim mobilenet_v3.py: mobilenet(finegrain_classification_mode=True) keeps the pre-logits
    # layer at 1280/1024 (// 2 with reduced_tail); Keras scales it only for α > 1.
    setting, last = mobilenet_v3_config(arch, width, reduced_tail=reduced_tail)
    assert last == last_channel
    assert mobilenet_v3_head_channels(arch, width, reduced_tail) == (head, last_channel)
    builder = mobilenet_v3_large if arch.endswith("large") else mobilenet_v3_small
    model = builder(width, reduced_tail=reduced_tail)
    assert model.features[-1][0].out_channels == head
    assert model.classifier[0].in_features == head
    assert model.classifier[0].out_features == last_channel == model.classifier[3].in_features


def test_last_conv_is_scaled_as_its_own_op() -> None:
    # TF-slim's last 1×1 conv is a separate op (num_outputs=960) → make_divisible(960 · α, 8);
    # at α = 0.62 that is 592, while 6 × make_divisible(160 · α, 8) would be 576.
    setting, _ = mobilenet_v3_config("mobilenet_v3_large", 0.62)
    assert setting[-1].out_channels == 96
    assert mobilenet_v3_head_channels("mobilenet_v3_large", 0.62)[0] == 592
    assert mobilenet_v3_large(0.62).features[-1][0].out_channels == 592


#: Expansion sizes per block. α = 1: the paper's Tables 1/2 (= torchvision). α = 0.75: TF-slim
#: conv_blocks.py expand_input_by_factor — make_divisible(scaled input · exp/in, 8) — e.g. Large
#: block 2: input stays 16 (make_divisible(12) = 16), 16 · 4 = 64 (torchvision: 64 · 0.75 → 48).
EXPANSIONS = {
    ("mobilenet_v3_large", 1.0): [
        16, 64, 72, 72, 120, 120, 240, 200, 184, 184, 480, 672, 672, 960, 960
    ],
    ("mobilenet_v3_large", 0.75): [
        16, 64, 72, 72, 96, 96, 192, 160, 144, 144, 384, 528, 528, 720, 720
    ],
    ("mobilenet_v3_small", 1.0): [16, 72, 88, 96, 240, 240, 120, 144, 288, 576, 576],
    ("mobilenet_v3_small", 0.75): [16, 72, 88, 96, 192, 192, 96, 120, 240, 432, 432],
}


@pytest.mark.parametrize(("arch", "width"), sorted(EXPANSIONS))
def test_expansion_sizes_follow_tf_slim(arch: str, width: float) -> None:
    setting, _ = mobilenet_v3_config(arch, width)
    assert [c.expanded_channels for c in setting] == EXPANSIONS[(arch, width)]
    for prev, cnf in zip(setting, setting[1:]):
        assert cnf.input_channels == prev.out_channels


@pytest.mark.parametrize("arch", ["mobilenet_v3_large", "mobilenet_v3_small"])
@pytest.mark.parametrize("reduced_tail", [False, True])
@pytest.mark.parametrize("dilated", [False, True])
def test_width_one_is_the_table(arch: str, reduced_tail: bool, dilated: bool) -> None:
    # At α = 1 TF-slim's rule reduces to the paper's table, i.e. to torchvision's network.
    setting, last = mobilenet_v3_config(arch, 1.0, reduced_tail=reduced_tail, dilated=dilated)
    rd = 2 if reduced_tail else 1
    tail = {"mobilenet_v3_large": (160, 960, 1280), "mobilenet_v3_small": (96, 576, 1024)}[arch]
    assert setting[-1].out_channels == tail[0] // rd
    assert setting[-1].expanded_channels == tail[1] // rd
    assert last == tail[2] // rd
    assert mobilenet_v3_head_channels(arch, 1.0, reduced_tail)[0] == 6 * (tail[0] // rd)
    if not reduced_tail:
        assert [c.expanded_channels for c in setting] == EXPANSIONS[(arch, 1.0)]


#: This implementation's counts at α = 0.75 (1000 classes). Paper Table 3: Large 4.0 M / 155 M,
#: Small 2.0 M / 44 M MAdds (checked against PAPER_TABLE in test_registry.py).
COUNTS_075 = {"large": (3_993_528, 154_560_624), "small": (2_041_872, 43_399_344)}


@pytest.mark.parametrize("arch", ["large", "small"])
def test_width_075_counts(arch: str) -> None:
    model = BUILDERS[arch](0.75)
    assert (count_params(model), count_macs(model, 224)) == COUNTS_075[arch]


def test_dilated_keeps_output_stride_16() -> None:
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        plain = mobilenet_v3_small(0.5).eval().features(x)
        dilated = mobilenet_v3_small(0.5, dilated=True).eval().features(x)
    assert plain.shape[-1] == 2 and dilated.shape[-1] == 4
    assert count_params(mobilenet_v3_small(dilated=True)) == TORCHVISION_PARAMS["small"]


@pytest.mark.parametrize("arch", ["large", "small"])
@pytest.mark.parametrize("resolution", [64, 96])
def test_forward_tiny(arch: str, resolution: int) -> None:
    model = BUILDERS[arch](width_mult=0.25, num_classes=10).eval()
    assert isinstance(model, MobileNetV3)
    with torch.no_grad():
        out = model(torch.randn(1, 3, resolution, resolution))
    assert out.shape == (1, 10)


def test_load_round_trip_and_init() -> None:
    a, b = mobilenet_v3_small(0.5, num_classes=5), mobilenet_v3_small(0.5, num_classes=5)
    b.load_state_dict(a.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(a.eval()(x), b.eval()(x))
    for m in a.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
        elif isinstance(m, (nn.Linear, nn.Conv2d)) and m.bias is not None:
            assert torch.all(m.bias == 0)


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        mobilenet_v3_config("mobilenet_v3_medium")
    with pytest.raises(ValueError):
        mobilenet_v3_large(width_mult=0)
    with pytest.raises(ValueError):
        MobileNetV3([], 1280)
    with pytest.raises(TypeError):
        MobileNetV3([object()], 1280)  # type: ignore[list-item]
