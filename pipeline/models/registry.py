"""The model zoo: which models exist, how to build them, how to feed them, what they should cost.

A :class:`ModelSpec` names one network (architecture, width multiplier α, input resolution ρ,
number of classes, and for ``mobilenet_nas`` its point of the NAS space). :func:`build` turns
it into an ``nn.Module`` in eval mode, :func:`preprocessing_for` says how to prepare its input,
:func:`min_resolution` is the smallest input it takes, and :data:`PAPER_TABLE` holds the
published cost of every entry of :func:`standard_grid` so tests can check the implementations
against the literature.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

from torch import nn

from pipeline.errors import UserInputError

from .mobilenet_v1 import MobileNetV1
from .mobilenet_v2 import MobileNetV2
from .mobilenet_v3 import mobilenet_v3_large, mobilenet_v3_small
from .nas_space import MobileNetNAS, NasChoice

__all__ = [
    "ModelSpec",
    "ZOO_NAMES",
    "WIDTH_RANGE",
    "STANDARD_WIDTHS",
    "build",
    "validate_spec",
    "Preprocessing",
    "preprocessing_for",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CROP_FRACTION",
    "min_resolution",
    "standard_grid",
    "PAPER_TABLE",
]

ZOO_NAMES: tuple[str, ...] = (
    "mobilenet_v1",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "mobilenet_nas",
)

#: Widths each architecture was published with (the ``standard_grid`` widths; mobilenet_nas has
#: no published figures, so it is not in the grid and its widths are its search space's).
STANDARD_WIDTHS: dict[str, tuple[float, ...]] = {
    "mobilenet_v1": (1.0, 0.75, 0.5, 0.25),
    "mobilenet_v2": (1.4, 1.0, 0.75, 0.5, 0.35),
    "mobilenet_v3_small": (1.0, 0.75),
    "mobilenet_v3_large": (1.0, 0.75),
    # The guide's search-space widths (MobileNetSearchSpace.width_multipliers): V2's published
    # widths plus 0.25, which V2 did not publish but V1 did (the NAS body is V2's).
    "mobilenet_nas": (1.4, 1.0, 0.75, 0.5, 0.35, 0.25),
}

#: Accepted width multipliers: the open interval (0, max]. The upper ends are the largest
#: multiplier each paper defines or evaluates: V1 defines α ∈ (0, 1] (Section 3.3); V2 publishes
#: up to 1.4; V3's Figure 1 evaluates 0.75, 1.0 and 1.25. Below the standard widths every layer is
#: clamped to 8 channels, so small α are valid networks, just not published ones.
WIDTH_RANGE: dict[str, tuple[float, float]] = {
    "mobilenet_v1": (0.0, 1.0),
    "mobilenet_v2": (0.0, 1.4),
    "mobilenet_v3_small": (0.0, 1.25),
    "mobilenet_v3_large": (0.0, 1.25),
    # The NAS family is V2's body, so V2's range: up to its largest published width, 1.4 (also
    # the top of the guide's search space).
    "mobilenet_nas": (0.0, 1.4),
}

# Every model here halves the resolution five times (stem + four stages): output stride 32.
_TOTAL_STRIDE: dict[str, int] = {name: 32 for name in ZOO_NAMES}


@dataclass(frozen=True)
class ModelSpec:
    """One zoo entry: architecture ``name``, width multiplier, input resolution, class count;
    ``nas``: the NAS-space point of a ``mobilenet_nas`` (its defaults when not given)."""

    name: str
    width: float = 1.0
    resolution: int = 224
    num_classes: int = 1000
    nas: Optional[NasChoice] = None

    def __post_init__(self) -> None:
        if self.name == "mobilenet_nas" and self.nas is None:  # one spec per network
            object.__setattr__(self, "nas", NasChoice())

    @property
    def label(self) -> str:
        """``<name>_<width>_<resolution>``, e.g. ``mobilenet_v2_1.0_224`` (TF-slim's naming).

        A non-default class count is appended (``..._224_10cls``) so labels stay unique.
        """
        label = f"{self.name}_{float(self.width)}_{self.resolution}"
        if self.nas is not None:   # e.g. mobilenet_nas_0.35_64_d0.5_k5_hard_swish
            label += f"_{self.nas.tag}"
        if self.num_classes != 1000:
            label += f"_{self.num_classes}cls"
        return label


def validate_spec(spec: ModelSpec) -> None:
    """Raise :class:`~pipeline.errors.UserInputError` (a ``ValueError``) if ``spec`` is unbuildable.

    Checks the name, the width multiplier, the class count and the NAS choice (only for
    ``mobilenet_nas``); the resolution is checked by
    callers against :func:`min_resolution`, since the networks themselves accept any size.
    """
    if spec.name not in ZOO_NAMES:
        raise UserInputError(
            f"unknown model {spec.name!r}; valid names: {', '.join(ZOO_NAMES)}"
        )
    low, high = WIDTH_RANGE[spec.name]
    width = spec.width
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not math.isfinite(width):
        raise UserInputError(f"{spec.name}: width must be a finite number, got {width!r}")
    if not low < width <= high:
        standard = ", ".join(str(w) for w in STANDARD_WIDTHS[spec.name])
        raise UserInputError(
            f"{spec.name}: width {width} is outside the supported range ({low}, {high}]; "
            f"published widths: {standard}"
        )
    if isinstance(spec.num_classes, bool) or not isinstance(spec.num_classes, int):
        raise UserInputError(f"num_classes must be an integer, got {spec.num_classes!r}")
    if spec.num_classes < 1:
        raise UserInputError(f"num_classes must be >= 1, got {spec.num_classes}")
    if spec.nas is not None and spec.name != "mobilenet_nas":
        raise UserInputError(f"{spec.name}: a NAS choice (nas) is only for mobilenet_nas; "
                             f"drop it or use model mobilenet_nas")
    if spec.nas is not None and not isinstance(spec.nas, NasChoice):
        raise UserInputError(f"nas must be a NasChoice, got {type(spec.nas).__name__}")


_BUILDERS: dict[str, Callable[[float, int, NasChoice], nn.Module]] = {
    "mobilenet_v1": lambda w, n, _: MobileNetV1(width_mult=w, num_classes=n),
    "mobilenet_v2": lambda w, n, _: MobileNetV2(width_mult=w, num_classes=n),
    "mobilenet_v3_small": lambda w, n, _: mobilenet_v3_small(width_mult=w, num_classes=n),
    "mobilenet_v3_large": lambda w, n, _: mobilenet_v3_large(width_mult=w, num_classes=n),
    "mobilenet_nas": lambda w, n, c: MobileNetNAS(width_mult=w, choice=c, num_classes=n),
}


def build(spec: ModelSpec) -> nn.Module:
    """Build ``spec`` with freshly initialised weights, in eval mode."""
    validate_spec(spec)
    choice = spec.nas if spec.nas is not None else NasChoice()
    model = _BUILDERS[spec.name](float(spec.width), spec.num_classes, choice)
    return model.eval()


IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
#: Centre-crop fraction of the standard ImageNet evaluation (256 → 224).
CROP_FRACTION = 0.875


@dataclass(frozen=True)
class Preprocessing:
    """Resize the shorter side to ``resize``, centre-crop ``crop``², scale to [0, 1], normalise."""

    resize: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"


def preprocessing_for(spec: ModelSpec) -> Preprocessing:
    """ImageNet evaluation preprocessing at ``spec.resolution`` (torchvision's convention:
    ``resize = round(resolution / 0.875)``, e.g. 256 for 224; mean/std normalisation).

    (The TF-slim checkpoints instead scale to [-1, 1]; these PyTorch models follow torchvision.)
    """
    validate_spec(spec)
    return Preprocessing(
        resize=int(round(spec.resolution / CROP_FRACTION)),
        crop=spec.resolution,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    )


def min_resolution(spec: ModelSpec) -> int:
    """Smallest input side the model is meant to take: its total stride (32 for every model
    here), so that the last feature map is at least 1×1 from real pixels rather than padding."""
    if spec.name not in ZOO_NAMES:
        raise UserInputError(f"unknown model {spec.name!r}; valid names: {', '.join(ZOO_NAMES)}")
    return _TOTAL_STRIDE[spec.name]


_V1_RESOLUTIONS = (224, 192, 160, 128)


def standard_grid() -> list[ModelSpec]:
    """Every published configuration: V1 α × ρ (16), V2 α at 224 (5), V3 Small/Large α at 224."""
    grid = [
        ModelSpec("mobilenet_v1", w, r)
        for w in STANDARD_WIDTHS["mobilenet_v1"]
        for r in _V1_RESOLUTIONS
    ]
    for name in ("mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large"):
        grid += [ModelSpec(name, w, 224) for w in STANDARD_WIDTHS[name]]
    return grid


#: Published (parameters in millions, multiply-adds in millions) of every ``standard_grid`` entry,
#: keyed by (name, width, resolution). All published models have 1000 classes + background
#: (1001 logits) except where stated; the zoo builds 1000, a difference of ≤ 0.1 % of the params.
PAPER_TABLE: dict[tuple[str, float, int], tuple[float, float]] = {
    # --- MobileNetV1 ---------------------------------------------------------------------------
    # Howard et al. 2017, arXiv:1704.04861, Table 6 (width multiplier, ρ = 224) and Table 7
    # (resolution, α = 1.0). Params are printed to one decimal (0.5 M for α = 0.25 is 0.47 M).
    ("mobilenet_v1", 1.0, 224): (4.2, 569.0),
    ("mobilenet_v1", 1.0, 192): (4.2, 418.0),
    ("mobilenet_v1", 1.0, 160): (4.2, 290.0),
    ("mobilenet_v1", 1.0, 128): (4.2, 186.0),
    ("mobilenet_v1", 0.75, 224): (2.6, 325.0),
    ("mobilenet_v1", 0.5, 224): (1.3, 149.0),
    ("mobilenet_v1", 0.25, 224): (0.5, 41.0),
    # Cells the paper's tables do not list: TF-slim research/slim/nets/mobilenet_v1.md
    # ("Pre-trained Models" table, Million MACs | Million Parameters). Two known quirks of that
    # table: its α = 0.75 row is ~2.6 % below the paper at every ρ (317 vs the paper's 325 at 224),
    # and its 0.25/192 entry (34) breaks the ρ² scaling of its own row (41 · (192/224)² ≈ 30).
    ("mobilenet_v1", 0.75, 192): (2.59, 233.0),
    ("mobilenet_v1", 0.75, 160): (2.59, 162.0),
    ("mobilenet_v1", 0.75, 128): (2.59, 104.0),
    ("mobilenet_v1", 0.5, 192): (1.34, 110.0),
    ("mobilenet_v1", 0.5, 160): (1.34, 77.0),
    ("mobilenet_v1", 0.5, 128): (1.34, 49.0),
    ("mobilenet_v1", 0.25, 192): (0.47, 34.0),
    ("mobilenet_v1", 0.25, 160): (0.47, 21.0),
    ("mobilenet_v1", 0.25, 128): (0.47, 14.0),
    # --- MobileNetV2 ---------------------------------------------------------------------------
    # TF-slim research/slim/nets/mobilenet/README.md, "Mobilenet V2 Imagenet Checkpoints" (MACs,
    # Parameters). The paper (arXiv:1801.04381, Table 4) gives only 1.0 (3.4 M, 300 M) and 1.4
    # (6.9 M, 585 M); the released 1.4 checkpoint has 6.06 M, which is what this architecture is.
    ("mobilenet_v2", 1.4, 224): (6.06, 582.0),
    ("mobilenet_v2", 1.0, 224): (3.47, 300.0),
    ("mobilenet_v2", 0.75, 224): (2.61, 209.0),
    ("mobilenet_v2", 0.5, 224): (1.95, 97.0),
    ("mobilenet_v2", 0.35, 224): (1.66, 59.0),
    # --- MobileNetV3 ---------------------------------------------------------------------------
    # Howard et al. 2019, arXiv:1905.02244, Table 3 (MAdds, Params), in the version torchvision
    # implements (arXiv v1–v4). arXiv v5 revised the Small rows to 66 M / 2.9 M (α = 1) and
    # 44 M / 2.4 M (α = 0.75), the figures of the TF-slim release, a slightly different network.
    # At α = 0.75 the zoo follows TF-slim's width rule, which made the paper's 0.75 models
    # (expansions = make_divisible(scaled input · exp/in, 8), classifier hidden layer kept at
    # 1280/1024; see pipeline/models/mobilenet_v3.py): 3.99 M / 154.6 M and 2.04 M / 43.4 M.
    # torchvision's rule (every entry scaled, hidden layer too) would give 3.38 M / 140 M and
    # 1.65 M / 39.1 M. At α = 1 both rules are the same network.
    ("mobilenet_v3_large", 1.0, 224): (5.4, 219.0),
    ("mobilenet_v3_large", 0.75, 224): (4.0, 155.0),
    ("mobilenet_v3_small", 1.0, 224): (2.5, 56.0),
    ("mobilenet_v3_small", 0.75, 224): (2.0, 44.0),
}
