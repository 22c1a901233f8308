"""MobileNetV3-Large and -Small (Howard et al. 2019, "Searching for MobileNetV3", arXiv:1905.02244).

Block settings (Tables 1 and 2 of the paper), SE placement, activations, channel rounding,
BatchNorm hyper-parameters and weight init are those of ``torchvision.models.mobilenet_v3_large``
/ ``mobilenet_v3_small``; the ``state_dict`` keys are identical, so torchvision checkpoints load
with ``strict=True``. At α = 1 the network *is* torchvision's (5,483,032 / 2,542,856 params).

Width multiplier α ≠ 1 follows the TF-slim reference implementation that produced the paper's
α = 0.75 models (Table 3: Large 4.0 M / 155 M MAdds, Small 2.0 M / 44 M), not torchvision's rule
(which scales every table entry independently and the head's hidden layer too, giving
3.38 M / 140 M and 1.65 M / 39 M at 0.75). The TF-slim rule, from
tensorflow/models research/slim/nets/mobilenet/:

* ``mobilenet.py: depth_multiplier`` scales every op's ``num_outputs`` (stem, each block's
  projection, the last 1×1 conv "960"/"576", the pre-logits 1×1 conv "1280"/"1024") to
  ``_make_divisible(n * α, divisible_by=8, min_depth=8)`` — the same rounding as
  :func:`~pipeline.models.layers.make_divisible`.
* Expansion sizes are *not* table entries scaled by α: ``mobilenet_v3.py: mbv3_op`` passes
  ``expansion_size=expand_input_by_factor(ef)`` and ``conv_blocks.py: expand_input_by_factor``
  returns ``_make_divisible(num_inputs * ef, 8)`` of the block's actual (already scaled) input
  depth, with ``ef = exp / in`` of the paper's table (e.g. 4, 184/80, 72/16). The expansion 1×1
  conv exists only when that size exceeds the input depth (``conv_blocks.py: expanded_conv``).
* SE squeeze width: ``conv_blocks.py: squeeze_excite`` (``squeeze_factor=4``) uses
  ``_make_divisible(expansion / 4, 8)`` of the (scaled) expansion — as torchvision.
* The pre-logits layer is exempt: ``mobilenet_v3.py: mobilenet(...,
  finegrain_classification_mode=True)`` replaces the last op's ``multiplier_func`` by the identity,
  so it keeps 1280 (Large) / 1024 (Small) channels. The released 0.75 checkpoints have it (Keras
  applications ``mobilenet_v3.py``, which loads them, keeps ``last_point_ch`` unless α > 1), and
  only with it do the published 4.0 M / 2.0 M come out. Above α = 1 it is scaled, as in Keras and
  torchvision (``make_divisible(1280 · max(1, α))``, the MobileNetV2 rule).

At α = 1 all of this coincides with torchvision (every table entry is a multiple of 8). The TF
models have 1001 logits; with 1000 the counts here are 1,281 (Large) / 1,025 (Small) params and
1,280 / 1,024 MACs lower, which is immaterial.

Key layout::

    features.0        ConvNormActivation(3 → 16α, 3×3, stride 2, Hardswish)
    features.1 … N    InvertedResidual, children under ``block``:
                        [expand CNA, if expanded != input] → depthwise CNA → [SE, if use_se]
                        → project CNA (conv + BN, no activation)
    features.N+1      ConvNormActivation(→ 960α / 576α (6 × last block's at α = 1), 1×1, Hardswish)
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
    "mobilenet_v3_head_channels",
]

# BatchNorm as in torchvision's MobileNetV3 (TF's decay 0.99 → momentum 0.01; eps 1e-3).
_BatchNorm = partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)


def _adjust(channels: float, width_mult: float) -> int:
    return make_divisible(channels * width_mult, 8)


@dataclass(frozen=True)
class BlockConfig:
    """One bneck row of Table 1/2, with channels already scaled by the width multiplier.

    :meth:`scaled` applies TF-slim's rule (see the module docstring): input and output channels
    are ``make_divisible(c · α, 8)``, the expansion is ``make_divisible(scaled_in · exp / in, 8)``
    (TF-slim ``conv_blocks.py: expand_input_by_factor``). At α = 1 this is the table itself.
    """

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
        scaled_in = _adjust(input_channels, width_mult)
        # TF-slim: expansion_size = expand_input_by_factor(ef)(num_inputs=scaled_in), ef = exp/in.
        expansion_factor = expanded_channels / input_channels
        return cls(
            input_channels=scaled_in,
            kernel=kernel,
            expanded_channels=make_divisible(scaled_in * expansion_factor, 8),
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
            # TF-slim conv_blocks.py: squeeze_excite, _make_divisible(expansion / 4, 8) (the
            # expansion is a multiple of 8, so // and / agree).
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
    """MobileNetV3 trunk + classifier head built from a list of :class:`BlockConfig`.

    ``last_channel`` is the width of the classifier's hidden layer; ``lastconv_channels`` that of
    the last 1×1 conv (``features[-1]``), by default 6 × the last block's output channels
    (torchvision's rule; :func:`mobilenet_v3_head_channels` gives TF-slim's for α ≠ 1).
    """

    def __init__(
        self,
        inverted_residual_setting: Sequence[BlockConfig],
        last_channel: int,
        num_classes: int = 1000,
        dropout: float = 0.2,
        lastconv_channels: int | None = None,
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
        lastconv_out = 6 * lastconv_in if lastconv_channels is None else lastconv_channels
        if lastconv_out < 1:
            raise ValueError(f"lastconv_channels must be >= 1, got {lastconv_out}")
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
    Channels follow TF-slim's width rule (module docstring); ``last_channel`` is the second
    element of :func:`mobilenet_v3_head_channels`: ``make_divisible((1280 or 1024) //
    reduce_divider * max(1, width_mult), 8)`` — not scaled down below α = 1 (TF-slim's
    ``finegrain_classification_mode``), scaled up above it.
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
    else:
        raise ValueError(
            f"unsupported MobileNetV3 arch {arch!r}; "
            "use 'mobilenet_v3_large' or 'mobilenet_v3_small'"
        )
    _, last_channel = mobilenet_v3_head_channels(arch, width_mult, reduced_tail)  # C5
    return setting, last_channel


def mobilenet_v3_head_channels(
    arch: str, width_mult: float = 1.0, reduced_tail: bool = False
) -> tuple[int, int]:
    """``(lastconv_channels, last_channel)``: widths of the last 1×1 conv and of the classifier's
    hidden layer, by TF-slim's rule (research/slim/nets/mobilenet/mobilenet_v3.py, ``V3_LARGE`` /
    ``V3_SMALL`` specs and ``mobilenet(..., finegrain_classification_mode=True)``).

    * last 1×1 conv: its own op in TF-slim (``num_outputs=960`` / ``576``), scaled by
      ``mobilenet.py: depth_multiplier`` → ``make_divisible((960 or 576) // rd · α, 8)``. At the
      published widths 1.0 and 0.75 that equals 6 × the last block's channels, the rule
      torchvision and Keras use at every α; at other α the two can differ (0.62: 592 vs 576).
    * classifier hidden layer: ``make_divisible((1280 or 1024) // rd · max(1, α), 8)`` — exempt
      from the multiplier below 1 (``finegrain_classification_mode``), scaled above it (Keras
      applications ``mobilenet_v3.py``: ``if alpha > 1.0: last_point_ch = _depth(...)``).

    ``rd`` is 2 with ``reduced_tail`` (torchvision's option), else 1.
    """
    if not width_mult > 0:
        raise ValueError(f"width_mult must be > 0, got {width_mult}")
    rd = 2 if reduced_tail else 1
    if arch == "mobilenet_v3_large":
        lastconv, hidden = 960 // rd, 1280 // rd
    elif arch == "mobilenet_v3_small":
        lastconv, hidden = 576 // rd, 1024 // rd
    else:
        raise ValueError(
            f"unsupported MobileNetV3 arch {arch!r}; "
            "use 'mobilenet_v3_large' or 'mobilenet_v3_small'"
        )
    return _adjust(lastconv, width_mult), _adjust(hidden, max(1.0, width_mult))


def _mobilenet_v3(arch: str, width_mult: float, num_classes: int, dropout: float,
                  reduced_tail: bool, dilated: bool) -> MobileNetV3:
    setting, last = mobilenet_v3_config(arch, width_mult, reduced_tail, dilated)
    lastconv, _ = mobilenet_v3_head_channels(arch, width_mult, reduced_tail)
    return MobileNetV3(
        setting, last, num_classes=num_classes, dropout=dropout, lastconv_channels=lastconv
    )


def mobilenet_v3_large(
    width_mult: float = 1.0,
    num_classes: int = 1000,
    dropout: float = 0.2,
    reduced_tail: bool = False,
    dilated: bool = False,
) -> MobileNetV3:
    """MobileNetV3-Large (paper Table 1); 5,483,032 parameters at α = 1, 1000 classes
    (3,993,528 at α = 0.75; paper Table 3: 4.0 M)."""
    return _mobilenet_v3("mobilenet_v3_large", width_mult, num_classes, dropout, reduced_tail,
                         dilated)


def mobilenet_v3_small(
    width_mult: float = 1.0,
    num_classes: int = 1000,
    dropout: float = 0.2,
    reduced_tail: bool = False,
    dilated: bool = False,
) -> MobileNetV3:
    """MobileNetV3-Small (paper Table 2); 2,542,856 parameters at α = 1, 1000 classes
    (2,041,872 at α = 0.75; paper Table 3: 2.0 M)."""
    return _mobilenet_v3("mobilenet_v3_small", width_mult, num_classes, dropout, reduced_tail,
                         dilated)
