"""Building blocks shared by the MobileNet family.

The module layouts (and therefore the ``state_dict`` key names) follow torchvision's
``torchvision.ops.misc.Conv2dNormActivation`` and ``torchvision.ops.misc.SqueezeExcitation`` so
that checkpoints trained with torchvision load into these models unchanged.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor, nn

__all__ = ["make_divisible", "ConvNormActivation", "SqueezeExcitation", "init_weights"]


def make_divisible(v: float, divisor: int = 8, min_value: Optional[int] = None) -> int:
    """Round ``v`` to the nearest multiple of ``divisor``, never going below ``min_value``.

    This is the channel-rounding rule of the TF-slim MobileNetV2/V3 reference code (and
    torchvision's ``_make_divisible``): round half up to a multiple of ``divisor``, clamp to
    ``min_value`` (default: ``divisor``), and if that rounding lost more than 10 % of ``v``, go one
    multiple up.
    """
    if divisor <= 0:
        raise ValueError(f"divisor must be positive, got {divisor}")
    if min_value is None:
        min_value = divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class ConvNormActivation(nn.Sequential):
    """``Conv2d`` → norm → activation, as an ``nn.Sequential`` keyed ``0``, ``1``, ``2``.

    Same children, defaults and key names as torchvision's ``Conv2dNormActivation``: the
    convolution has no bias when a norm layer follows it, padding defaults to "same" for odd
    kernels (``(k - 1) // 2 * dilation``), and a ``None`` norm or activation is simply omitted
    (so a projection layer with ``activation_layer=None`` has keys ``0`` and ``1`` only).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: Optional[int] = None,
        groups: int = 1,
        norm_layer: Optional[Callable[..., nn.Module]] = nn.BatchNorm2d,
        activation_layer: Optional[Callable[..., nn.Module]] = nn.ReLU,
        dilation: int = 1,
        inplace: Optional[bool] = True,
        bias: Optional[bool] = None,
    ) -> None:
        if padding is None:
            padding = (kernel_size - 1) // 2 * dilation
        if bias is None:
            bias = norm_layer is None
        layers: list[nn.Module] = [
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride,
                padding,
                dilation=dilation,
                groups=groups,
                bias=bias,
            )
        ]
        if norm_layer is not None:
            layers.append(norm_layer(out_channels))
        if activation_layer is not None:
            kwargs = {} if inplace is None else {"inplace": inplace}
            layers.append(activation_layer(**kwargs))
        super().__init__(*layers)
        self.out_channels = out_channels


class SqueezeExcitation(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018) with 1×1 convolutions as the two FC layers.

    Children ``avgpool``, ``fc1``, ``fc2``, ``activation``, ``scale_activation`` — the same as
    torchvision's ``SqueezeExcitation``. The default gate here is ``Hardsigmoid`` (MobileNetV3's
    choice) rather than torchvision's ``Sigmoid`` default; neither has parameters, so the keys are
    identical either way.
    """

    def __init__(
        self,
        input_channels: int,
        squeeze_channels: int,
        activation: Callable[..., nn.Module] = nn.ReLU,
        scale_activation: Callable[..., nn.Module] = nn.Hardsigmoid,
    ) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(input_channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, input_channels, 1)
        self.activation = activation()
        self.scale_activation = scale_activation()

    def _scale(self, x: Tensor) -> Tensor:
        scale = self.avgpool(x)
        scale = self.fc1(scale)
        scale = self.activation(scale)
        scale = self.fc2(scale)
        return self.scale_activation(scale)

    def forward(self, x: Tensor) -> Tensor:
        return self._scale(x) * x


@torch.no_grad()
def init_weights(model: nn.Module) -> None:
    """torchvision's MobileNet initialisation, applied to every submodule of ``model``.

    Conv: Kaiming-normal (fan_out), zero bias. BatchNorm/GroupNorm: weight 1, bias 0.
    Linear: normal(0, 0.01), zero bias.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


def check_multipliers(width_mult: float, num_classes: int) -> None:
    """The constructor checks every zoo network shares: a positive width, at least one class."""
    if not width_mult > 0:
        raise ValueError(f"width_mult must be > 0, got {width_mult}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")


def pooled_classifier_forward(model: nn.Module, x: Tensor) -> Tensor:
    """``features`` -> global average pool -> flatten -> ``classifier`` (V2 and the NAS body)."""
    x = model.features(x)
    x = nn.functional.adaptive_avg_pool2d(x, (1, 1))
    x = torch.flatten(x, 1)
    return model.classifier(x)
