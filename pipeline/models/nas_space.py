"""A searchable MobileNetV2-style family over the NAS space of the guide the product comes from.

One point of the space is a :class:`NasChoice`: a depth multiplier ``d`` (each stage of the V2
body gets ``ceil(n * d)`` inverted-residual blocks instead of ``n``), a depthwise kernel size
``k`` shared by every block, and one activation used everywhere (stem, expansions, depthwise
convolutions, the last 1×1 convolution). Width α and resolution ρ are the zoo's usual ones:
channels are ``make_divisible(c * α, 8)``, exactly as in :class:`~.mobilenet_v2.MobileNetV2`.

At the default choice (d = 1, k = 3, ReLU6) the network *is* MobileNetV2: same modules, same
``state_dict`` keys and shapes (``features.N...``, ``classifier.1``), same parameter count.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

from torch import Tensor, nn

from pipeline.errors import UserInputError

from .layers import (ConvNormActivation, check_multipliers, init_weights, make_divisible,
                     pooled_classifier_forward)
from .mobilenet_v2 import V2_SETTING, InvertedResidual

__all__ = [
    "DEPTH_MULTIPLIERS",
    "KERNEL_SIZES",
    "ACTIVATIONS",
    "NasChoice",
    "stage_repeats",
    "MobileNetNAS",
    "nas_space",
]

#: The guide's search space (``MobileNetSearchSpace``): depth multipliers, kernels, activations.
DEPTH_MULTIPLIERS: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25)
KERNEL_SIZES: tuple[int, ...] = (3, 5, 7)
ACTIVATIONS: dict[str, Callable[..., nn.Module]] = {
    "relu6": nn.ReLU6,
    "swish": nn.SiLU,          # x · sigmoid(x) (Ramachandran et al. 2017; "SiLU" in PyTorch)
    "hard_swish": nn.Hardswish,  # x · ReLU6(x + 3) / 6 (MobileNetV3)
}

_STEM_CHANNELS = 32
_LAST_CHANNEL = 1280


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class NasChoice:
    """One point of the NAS space (the defaults are MobileNetV2's)."""

    depth_multiplier: float = 1.0
    kernel_size: int = 3
    activation: str = "relu6"

    def __post_init__(self) -> None:
        d, k, act = self.depth_multiplier, self.kernel_size, self.activation
        if not _is_number(d) or float(d) not in DEPTH_MULTIPLIERS:
            raise UserInputError(f"nas.depth_multiplier must be one of "
                                 f"{', '.join(map(str, DEPTH_MULTIPLIERS))}, got {d!r}")
        if not _is_number(k) or k != int(k) or int(k) not in KERNEL_SIZES:
            raise UserInputError(f"nas.kernel_size must be one of "
                                 f"{', '.join(map(str, KERNEL_SIZES))}, got {k!r}")
        if not isinstance(act, str) or act not in ACTIVATIONS:
            raise UserInputError(f"nas.activation must be one of "
                                 f"{', '.join(ACTIVATIONS)}, got {act!r}")
        object.__setattr__(self, "depth_multiplier", float(d))  # 1 and 1.0: one choice
        object.__setattr__(self, "kernel_size", int(k))

    @property
    def tag(self) -> str:
        """Label suffix, e.g. ``d0.5_k5_hard_swish``."""
        return f"d{self.depth_multiplier}_k{self.kernel_size}_{self.activation}"


def stage_repeats(depth_multiplier: float,
                  setting: Sequence[tuple[int, int, int, int]] = V2_SETTING) -> list[int]:
    """Blocks per stage: ``ceil(n * d)`` for each stage's V2 repeat count ``n`` (never 0)."""
    # round() first: 0.75 · 4 must give 3, not ceil(3.0000000000000004) = 4
    return [max(1, math.ceil(round(n * depth_multiplier, 9))) for _, _, n, _ in setting]


class MobileNetNAS(nn.Module):
    """MobileNetV2's body with the NAS space's depth, depthwise kernel and activation.

    Layout (torchvision's V2 naming): ``features.0`` the stem (3×3, stride 2), ``features.1``
    … ``features.B`` the inverted residual blocks, ``features.B+1`` the 1×1 conv to
    ``1280 · max(1, α)`` channels, ``classifier.0`` / ``.1`` dropout and the linear layer.
    """

    def __init__(
        self,
        width_mult: float = 1.0,
        choice: NasChoice = NasChoice(),
        num_classes: int = 1000,
        dropout: float = 0.2,
        round_nearest: int = 8,
    ) -> None:
        super().__init__()
        check_multipliers(width_mult, num_classes)
        self.width_mult = width_mult
        self.choice = choice
        act = ACTIVATIONS[choice.activation]
        k = choice.kernel_size

        input_channel = make_divisible(_STEM_CHANNELS * width_mult, round_nearest)
        self.last_channel = make_divisible(_LAST_CHANNEL * max(1.0, width_mult), round_nearest)
        features: list[nn.Module] = [
            ConvNormActivation(3, input_channel, stride=2, activation_layer=act)
        ]
        repeats = stage_repeats(choice.depth_multiplier)
        for (t, c, _, s), n in zip(V2_SETTING, repeats):
            output_channel = make_divisible(c * width_mult, round_nearest)
            for i in range(n):
                features.append(InvertedResidual(input_channel, output_channel,
                                                 s if i == 0 else 1, t, k, act))
                input_channel = output_channel
        features.append(
            ConvNormActivation(input_channel, self.last_channel, kernel_size=1,
                               activation_layer=act)
        )
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout), nn.Linear(self.last_channel, num_classes)
        )
        self.num_blocks = sum(repeats)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        return pooled_classifier_forward(self, x)


def nas_space() -> list[NasChoice]:
    """Every point of the space (4 depths × 3 kernels × 3 activations = 36), in a fixed order."""
    return [NasChoice(d, k, a) for d in DEPTH_MULTIPLIERS for k in KERNEL_SIZES
            for a in ACTIVATIONS]
