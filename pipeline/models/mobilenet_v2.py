"""MobileNetV2 (Sandler et al. 2018, arXiv:1801.04381).

Module structure, ``state_dict`` keys, channel rounding and weight init are identical to
``torchvision.models.mobilenet_v2``: a torchvision checkpoint loads with ``strict=True``.

Key layout::

    features.0            ConvNormActivation(3 → 32α, 3×3, stride 2, ReLU6)     keys 0.*, 1.*
    features.1 … 17       InvertedResidual, children under ``conv``:
                            t == 1:  conv.0 (dw CNA), conv.1 (1×1 Conv2d), conv.2 (BN)
                            t  > 1:  conv.0 (pw CNA), conv.1 (dw CNA), conv.2 (Conv2d), conv.3 (BN)
    features.18           ConvNormActivation(→ last_channel, 1×1, ReLU6)
    classifier.0 / .1     Dropout / Linear
"""
from __future__ import annotations

from typing import Callable, Sequence

from torch import Tensor, nn

from .layers import (ConvNormActivation, check_multipliers, init_weights, make_divisible,
                     pooled_classifier_forward)

__all__ = ["MobileNetV2", "InvertedResidual", "V2_SETTING"]

#: (expansion t, output channels c, repeats n, first stride s) — Table 2 of the paper.
V2_SETTING: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
_STEM_CHANNELS = 32
_LAST_CHANNEL = 1280


class InvertedResidual(nn.Module):
    """Expand (1×1, ReLU6) → depthwise 3×3 (ReLU6) → linear 1×1 projection, with a residual
    connection when the stride is 1 and the channel count is unchanged.

    ``kernel_size`` (odd) and ``activation_layer`` generalise the depthwise kernel and the two
    activations for the NAS space (pipeline.models.nas_space); the defaults are the paper's.
    """

    def __init__(
        self,
        inp: int,
        oup: int,
        stride: int,
        expand_ratio: int,
        kernel_size: int = 3,
        activation_layer: Callable[..., nn.Module] = nn.ReLU6,
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd number, got {kernel_size}")
        self.stride = stride
        hidden_dim = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup

        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(
                ConvNormActivation(
                    inp, hidden_dim, kernel_size=1, activation_layer=activation_layer
                )
            )
        layers += [
            ConvNormActivation(
                hidden_dim,
                hidden_dim,
                kernel_size=kernel_size,
                stride=stride,
                groups=hidden_dim,
                activation_layer=activation_layer,
            ),
            nn.Conv2d(hidden_dim, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)
        self.out_channels = oup
        self._is_cn = stride > 1

    def forward(self, x: Tensor) -> Tensor:
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 with width multiplier ``width_mult``.

    Channel counts are ``make_divisible(c * width_mult, round_nearest)``; the last 1×1 conv keeps
    1280 channels for ``width_mult <= 1`` and is scaled only above 1 (paper Section 5.1: "we apply
    width multiplier to all layers except the very last convolutional layer", which torchvision and
    the TF-slim checkpoints implement as ``1280 * max(1.0, width_mult)``).
    """

    def __init__(
        self,
        width_mult: float = 1.0,
        num_classes: int = 1000,
        dropout: float = 0.2,
        round_nearest: int = 8,
        inverted_residual_setting: Sequence[tuple[int, int, int, int]] = V2_SETTING,
    ) -> None:
        super().__init__()
        check_multipliers(width_mult, num_classes)
        if not inverted_residual_setting or any(len(s) != 4 for s in inverted_residual_setting):
            raise ValueError("inverted_residual_setting must be a non-empty list of (t, c, n, s)")
        self.width_mult = width_mult

        input_channel = make_divisible(_STEM_CHANNELS * width_mult, round_nearest)
        self.last_channel = make_divisible(_LAST_CHANNEL * max(1.0, width_mult), round_nearest)
        features: list[nn.Module] = [
            ConvNormActivation(3, input_channel, stride=2, activation_layer=nn.ReLU6)
        ]
        for t, c, n, s in inverted_residual_setting:
            output_channel = make_divisible(c * width_mult, round_nearest)
            for i in range(n):
                features.append(
                    InvertedResidual(input_channel, output_channel, s if i == 0 else 1, t)
                )
                input_channel = output_channel
        features.append(
            ConvNormActivation(
                input_channel, self.last_channel, kernel_size=1, activation_layer=nn.ReLU6
            )
        )
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout), nn.Linear(self.last_channel, num_classes)
        )
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        return pooled_classifier_forward(self, x)
