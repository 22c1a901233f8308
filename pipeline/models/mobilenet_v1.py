"""MobileNetV1 (Howard et al. 2017, "MobileNets", arXiv:1704.04861), written from the paper.

Table 1 of the paper: a standard 3×3 stride-2 convolution with 32 filters, then 13
depthwise-separable blocks (3×3 depthwise conv + BN + ReLU, then 1×1 pointwise conv + BN + ReLU),
global average pooling and one fully-connected layer.

Choices, and where they come from:

* **Activation: ReLU**, as in the paper (Figure 3 and Section 3.2) — not ReLU6, which the TF-slim
  reference implementation and most ports use. ReLU6 differs only by clipping at 6; it changes
  neither the parameter count nor the multiply-adds.
* **Width multiplier α**: every layer gets ``max(int(c * α), 8)`` channels, the TF-slim
  reference rule (``depth = lambda d: max(int(d * depth_multiplier), min_depth)`` with
  ``min_depth=8`` in ``research/slim/nets/mobilenet_v1.py``). For the published α ∈ {0.25, 0.5,
  0.75, 1.0} every width is already a multiple of 8, so this rule and ``make_divisible(c * α, 8)``
  give the same networks and both reproduce the published parameter counts; they differ only for
  non-standard α (e.g. α = 0.3 gives 9 stem channels here, 16 with ``make_divisible``).
* **Classifier**: ``Dropout`` then ``Linear``. TF-slim uses a 1×1 conv for 1001 classes
  (background + 1000) and ``dropout_keep_prob=0.999``, hence the default ``dropout=0.001``.
* **BatchNorm eps = 1e-3**, the TF-slim value, so converted TF checkpoints behave identically.
* **Init**: torchvision's MobileNet scheme (see :func:`init_weights`).
"""
from __future__ import annotations

from functools import partial
from typing import Sequence

import torch
from torch import Tensor, nn

from .layers import ConvNormActivation, check_multipliers, init_weights

__all__ = ["MobileNetV1", "DepthwiseSeparable", "V1_BLOCKS", "v1_channels"]

#: (pointwise output channels, depthwise stride) of the 13 separable blocks — Table 1 of the paper.
V1_BLOCKS: tuple[tuple[int, int], ...] = (
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
)
_STEM_CHANNELS = 32
_MIN_DEPTH = 8

_BatchNorm = partial(nn.BatchNorm2d, eps=1e-3)


def v1_channels(channels: int, width_mult: float, min_depth: int = _MIN_DEPTH) -> int:
    """Channels of a layer with ``channels`` at α = 1 under width multiplier ``width_mult``."""
    return max(int(channels * width_mult), min_depth)


class DepthwiseSeparable(nn.Module):
    """One depthwise-separable block: ``dw`` (3×3 depthwise) then ``pw`` (1×1 pointwise)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        self.dw = ConvNormActivation(
            in_channels,
            in_channels,
            kernel_size=3,
            stride=stride,
            groups=in_channels,
            norm_layer=_BatchNorm,
            activation_layer=nn.ReLU,
        )
        self.pw = ConvNormActivation(
            in_channels,
            out_channels,
            kernel_size=1,
            norm_layer=_BatchNorm,
            activation_layer=nn.ReLU,
        )
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> Tensor:
        return self.pw(self.dw(x))


class MobileNetV1(nn.Module):
    """MobileNetV1 with width multiplier ``width_mult`` (α); the resolution multiplier ρ is just
    the input size, since the network ends in global average pooling and accepts any input of at
    least 32×32 (its total stride)."""

    def __init__(
        self,
        width_mult: float = 1.0,
        num_classes: int = 1000,
        dropout: float = 0.001,
        blocks: Sequence[tuple[int, int]] = V1_BLOCKS,
    ) -> None:
        super().__init__()
        check_multipliers(width_mult, num_classes)
        self.width_mult = width_mult

        in_ch = v1_channels(_STEM_CHANNELS, width_mult)
        features: list[nn.Module] = [
            ConvNormActivation(
                3, in_ch, kernel_size=3, stride=2, norm_layer=_BatchNorm, activation_layer=nn.ReLU
            )
        ]
        for channels, stride in blocks:
            out_ch = v1_channels(channels, width_mult)
            features.append(DepthwiseSeparable(in_ch, out_ch, stride))
            in_ch = out_ch
        self.features = nn.Sequential(*features)
        self.last_channel = in_ch
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(in_ch, num_classes))
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)
        x = nn.functional.adaptive_avg_pool2d(x, 1)
        x = torch.flatten(x, 1)
        return self.classifier(x)
