"""Model zoo: MobileNetV1/V2/V3 written in plain PyTorch (no torchvision dependency), and
``mobilenet_nas``, a V2-style family over a depth × kernel × activation search space.

V2 and V3 are state-dict compatible with ``torchvision.models.mobilenet_v2`` /
``mobilenet_v3_large`` / ``mobilenet_v3_small``; V1 follows the paper and the TF-slim reference.
"""
from __future__ import annotations

from .counting import count_macs, count_params, fp32_bytes
from .layers import ConvNormActivation, SqueezeExcitation, init_weights, make_divisible
from .mobilenet_v1 import DepthwiseSeparable, MobileNetV1
from .mobilenet_v2 import MobileNetV2
from .mobilenet_v3 import BlockConfig, MobileNetV3, mobilenet_v3_large, mobilenet_v3_small
from .nas_space import MobileNetNAS, NasChoice, nas_space, stage_repeats
from .registry import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PAPER_TABLE,
    STANDARD_WIDTHS,
    WIDTH_RANGE,
    ZOO_NAMES,
    ModelSpec,
    Preprocessing,
    build,
    min_resolution,
    preprocessing_for,
    standard_grid,
    validate_spec,
)

__all__ = [
    "BlockConfig",
    "ConvNormActivation",
    "DepthwiseSeparable",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MobileNetV1",
    "MobileNetV2",
    "MobileNetNAS",
    "MobileNetV3",
    "ModelSpec",
    "NasChoice",
    "PAPER_TABLE",
    "Preprocessing",
    "STANDARD_WIDTHS",
    "SqueezeExcitation",
    "WIDTH_RANGE",
    "ZOO_NAMES",
    "build",
    "count_macs",
    "count_params",
    "fp32_bytes",
    "init_weights",
    "make_divisible",
    "min_resolution",
    "mobilenet_v3_large",
    "mobilenet_v3_small",
    "nas_space",
    "preprocessing_for",
    "stage_repeats",
    "standard_grid",
    "validate_spec",
]
