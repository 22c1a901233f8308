"""MobileNetV3-Large and -Small (Howard et al. 2019, "Searching for MobileNetV3", arXiv:1905.02244).

Block settings (Tables 1 and 2 of the paper), SE placement, activations, channel rounding,
``last_channel`` rule, BatchNorm hyper-parameters and weight init are those of
``torchvision.models.mobilenet_v3_large`` / ``mobilenet_v3_small``; the ``state_dict`` keys are
identical, so torchvision checkpoints load with ``strict=True``.

Key layout::

    features.0        ConvNormActivation(3 → 16α, 3×3, stride 2, Hardswish)
    features.1 … N    InvertedResidual, children under ``block``:
                        [expand CNA, if expanded != input] → depthwise CNA → [SE, if use_se]
                        → project CNA (conv + BN, no activation)
    features.N+1      ConvNormActivation(→ 6 × last block's channels, 1×1, Hardswish)
    classifier        0 Linear → 1 Hardswish → 2 Dropout → 3 Linear
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Sequence

import torch
from torch import Tensor, nn

from .layers import ConvNormActivation, SqueezeExcitation, init_weights, make_divisible

__all__ = [
    "MobileNetV3",
    "InvertedResidual",
    "BlockConfig",
    "mobilenet_v3_large",
    "mobilenet_v3_small",
    "mobilenet_v3_config",
]

# BatchNorm as in torchvision's MobileNetV3 (TF's decay 0.99 → momentum 0.01; eps 1e-3).
_BatchNorm = partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)


def _adjust(channels: float, width_mult: float) -> int:
    return make_divisible(channels * width_mult, 8)


@dataclass(frozen=True)
class BlockConfig:
    """One bneck row of Table 1/2, with channels already scaled by the width multiplier."""

    input_channels: int
    kernel: int
    expanded_channels: int
    out_channels: int
    use_se: bool
    use_hs: bool
    stride: int
    dilation: int = 1

    @classmethod
    def scaled(
        cls,
        input_channels: int,
        kernel: int,
        expanded_channels: int,
        out_channels: int,
        use_se: bool,
        activation: str,
        stride: int,
        dilation: int,
        width_mult: float,
    ) -> "BlockConfig":
        if activation not in ("RE", "HS"):
            raise ValueError(f"activation must be 'RE' or 'HS', got {activation!r}")
        return cls(
            input_channels=_adjust(input_channels, width_mult),
            kernel=kernel,
            expanded_channels=_adjust(expanded_channels, width_mult),
            out_channels=_adjust(out_channels, width_mult),
            use_se=use_se,
            use_hs=activation == "HS",
            stride=stride,
            dilation=dilation,
        )


class InvertedResidual(nn.Module):
    """MobileNetV3 bneck (paper Section 5): expand → depthwise → optional SE → linear project."""

    def __init__(self, cnf: BlockConfig) -> None:
        super().__init__()
        if cnf.stride not in (1, 2):
            raise ValueError(f"illegal stride value {cnf.stride}")
        self.use_res_connect = cnf.stride == 1 and cnf.input_channels == cnf.out_channels
        activation = nn.Hardswish if cnf.use_hs else nn.ReLU

        layers: list[nn.Module] = []
        if cnf.expanded_channels != cnf.input_channels:
            layers.append(
                ConvNormActivation(
                    cnf.input_channels,
                    cnf.expanded_channels,
                    kernel_size=1,
                    norm_layer=_BatchNorm,
                    activation_layer=activation,
                )
            )
        # With dilation the stride is dropped (keeps the output stride at 16 for segmentation).
        stride = 1 if cnf.dilation > 1 else cnf.stride
        layers.append(
            ConvNormActivation(
                cnf.expanded_channels,
                cnf.expanded_channels,
                kernel_size=cnf.kernel,
                stride=stride,
                dilation=cnf.dilation,
                groups=cnf.expanded_channels,
                norm_layer=_BatchNorm,
                activation_layer=activation,
            )
        )
        if cnf.use_se:
            squeeze = make_divisible(cnf.expanded_channels // 4, 8)
            layers.append(SqueezeExcitation(cnf.expanded_channels, squeeze))
        layers.append(
            ConvNormActivation(
                cnf.expanded_channels,
                cnf.out_channels,
                kernel_size=1,
                norm_layer=_BatchNorm,
                activation_layer=None,
            )
        )
        self.block = nn.Sequential(*layers)
        self.out_channels = cnf.out_channels
        self._is_cn = cnf.stride > 1

    def forward(self, x: Tensor) -> Tensor:
        result = self.block(x)
        if self.use_res_connect:
            result = result + x
        return result


class MobileNetV3(nn.Module):
    """MobileNetV3 trunk + classifier head built from a list of :class:`BlockConfig`."""

    def __init__(
        self,
        inverted_residual_setting: Sequence[BlockConfig],
        last_channel: int,
        num_classes: int = 1000,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        if not inverted_residual_setting:
            raise ValueError("inverted_residual_setting must not be empty")
        if not all(isinstance(s, BlockConfig) for s in inverted_residual_setting):
            raise TypeError("inverted_residual_setting must be a sequence of BlockConfig")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")

        first = inverted_residual_setting[0].input_channels
        layers: list[nn.Module] = [
            ConvNormActivation(
                3,
                first,
                kernel_size=3,
                stride=2,
                norm_layer=_BatchNorm,
                activation_layer=nn.Hardswish,
            )
        ]
        layers += [InvertedResidual(cnf) for cnf in inverted_residual_setting]
        lastconv_in = inverted_residual_setting[-1].out_channels
        lastconv_out = 6 * lastconv_in
        layers.append(
            ConvNormActivation(
                lastconv_in,
                lastconv_out,
                kernel_size=1,
                norm_layer=_BatchNorm,
                activation_layer=nn.Hardswish,
            )
        )
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(lastconv_out, last_channel),
            nn.Hardswish(inplace=True),
            nn.Dropout(p=dropout, inplace=True),
            nn.Linear(last_channel, num_classes),
        )
        self.last_channel = last_channel
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


def mobilenet_v3_config(
    arch: str, width_mult: float = 1.0, reduced_tail: bool = False, dilated: bool = False
) -> tuple[list[BlockConfig], int]:
    """Block settings and ``last_channel`` for ``arch`` ("mobilenet_v3_large" or "..._small").

    ``reduced_tail`` halves the channels of the last stage (and of the head's hidden layer);
    ``dilated`` replaces the last stage's stride with dilation 2 — both as in torchvision.
    ``last_channel`` is ``make_divisible((1280 or 1024) // reduce_divider * width_mult, 8)``,
    i.e. the head's hidden layer *is* scaled by the width multiplier (unlike MobileNetV2's).
    """
    if not width_mult > 0:
        raise ValueError(f"width_mult must be > 0, got {width_mult}")
    rd = 2 if reduced_tail else 1
    dil = 2 if dilated else 1
    b = partial(BlockConfig.scaled, width_mult=width_mult)

    if arch == "mobilenet_v3_large":
        setting = [
            # in, k, exp, out, SE, act, s, dilation
            b(16, 3, 16, 16, False, "RE", 1, 1),
            b(16, 3, 64, 24, False, "RE", 2, 1),  # C1
            b(24, 3, 72, 24, False, "RE", 1, 1),
            b(24, 5, 72, 40, True, "RE", 2, 1),  # C2
            b(40, 5, 120, 40, True, "RE", 1, 1),
            b(40, 5, 120, 40, True, "RE", 1, 1),
            b(40, 3, 240, 80, False, "HS", 2, 1),  # C3
            b(80, 3, 200, 80, False, "HS", 1, 1),
            b(80, 3, 184, 80, False, "HS", 1, 1),
            b(80, 3, 184, 80, False, "HS", 1, 1),
            b(80, 3, 480, 112, True, "HS", 1, 1),
            b(112, 3, 672, 112, True, "HS", 1, 1),
            b(112, 5, 672, 160 // rd, True, "HS", 2, dil),  # C4
            b(160 // rd, 5, 960 // rd, 160 // rd, True, "HS", 1, dil),
            b(160 // rd, 5, 960 // rd, 160 // rd, True, "HS", 1, dil),
        ]
        last_channel = _adjust(1280 // rd, width_mult)  # C5
    elif arch == "mobilenet_v3_small":
        setting = [
            b(16, 3, 16, 16, True, "RE", 2, 1),  # C1
            b(16, 3, 72, 24, False, "RE", 2, 1),  # C2
            b(24, 3, 88, 24, False, "RE", 1, 1),
            b(24, 5, 96, 40, True, "HS", 2, 1),  # C3
            b(40, 5, 240, 40, True, "HS", 1, 1),
            b(40, 5, 240, 40, True, "HS", 1, 1),
            b(40, 5, 120, 48, True, "HS", 1, 1),
            b(48, 5, 144, 48, True, "HS", 1, 1),
            b(48, 5, 288, 96 // rd, True, "HS", 2, dil),  # C4
            b(96 // rd, 5, 576 // rd, 96 // rd, True, "HS", 1, dil),
            b(96 // rd, 5, 576 // rd, 96 // rd, True, "HS", 1, dil),
        ]
        last_channel = _adjust(1024 // rd, width_mult)  # C5
    else:
        raise ValueError(
            f"unsupported MobileNetV3 arch {arch!r}; "
            "use 'mobilenet_v3_large' or 'mobilenet_v3_small'"
        )
    return setting, last_channel


def mobilenet_v3_large(
    width_mult: float = 1.0,
    num_classes: int = 1000,
    dropout: float = 0.2,
    reduced_tail: bool = False,
    dilated: bool = False,
) -> MobileNetV3:
    """MobileNetV3-Large (paper Table 1); 5,483,032 parameters at α = 1, 1000 classes."""
    setting, last = mobilenet_v3_config("mobilenet_v3_large", width_mult, reduced_tail, dilated)
    return MobileNetV3(setting, last, num_classes=num_classes, dropout=dropout)


def mobilenet_v3_small(
    width_mult: float = 1.0,
    num_classes: int = 1000,
    dropout: float = 0.2,
    reduced_tail: bool = False,
    dilated: bool = False,
) -> MobileNetV3:
    """MobileNetV3-Small (paper Table 2); 2,542,856 parameters at α = 1, 1000 classes."""
    setting, last = mobilenet_v3_config("mobilenet_v3_small", width_mult, reduced_tail, dilated)
    return MobileNetV3(setting, last, num_classes=num_classes, dropout=dropout)
