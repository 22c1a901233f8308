"""Registry: specs, build, preprocessing, min_resolution, and the standard grid vs the papers."""
from __future__ import annotations

import functools
import math

import pytest
import torch
from torch import nn

from pipeline.errors import EXIT_BAD_INPUT, UserInputError
from pipeline.models import (
    PAPER_TABLE,
    ZOO_NAMES,
    MobileNetV1,
    MobileNetV2,
    MobileNetV3,
    ModelSpec,
    Preprocessing,
    build,
    count_macs,
    count_params,
    min_resolution,
    preprocessing_for,
    standard_grid,
)

# --- the standard grid against the published numbers ---------------------------------------------

#: Default agreement with the published figures, for params and for MACs: 3 %, or the rounding
#: of the printed figure when that is coarser (see _tolerance_m). Most entries agree to within
#: 1 %; the published models have 1001 logits (background class) against our 1000, and the V2
#: figures of the TF-slim README are uniformly ~1 % below the parameter count of the very same
#: network (Keras and torchvision both report 3,504,872 for V2 1.0; the README says 3.47 M).
REL_TOL = 0.03

#: Entries further off than that, each for a documented reason: (key, "params"|"macs") → rel. tol.
KNOWN_DEVIATIONS: dict[tuple[tuple[str, float, int], str], float] = {
    # TF-slim's table says 34 M for 0.25/192, but its own row scales as ρ² everywhere else:
    # 41 M · (192/224)² = 30.1 M, and we count 30.2 M. The 34 is an erratum of the README.
    (("mobilenet_v1", 0.25, 192), "macs"): 0.12,
}


def _tolerance_m(what: str, published: float, rel_tol: float) -> float:
    """Allowed |ours − published| in millions: ``rel_tol`` of the figure, or half a unit of its
    last printed digit. Every MAC figure is printed in whole millions (0.25/128: "14" for 13.6);
    params are printed with one (papers: "0.5" for 0.47 M) or two (TF-slim: "0.47") decimals."""
    if what == "macs":
        half_unit = 0.5
    else:
        decimals = len(repr(published).partition(".")[2])
        half_unit = 0.5 * 10.0**-decimals
    return max(rel_tol * published, half_unit)


@functools.lru_cache(maxsize=None)
def _counts(spec: ModelSpec) -> tuple[int, int]:
    model = build(spec)
    return count_params(model), count_macs(model, spec.resolution)


def _key(spec: ModelSpec) -> tuple[str, float, int]:
    return (spec.name, spec.width, spec.resolution)


@pytest.mark.parametrize("spec", standard_grid(), ids=lambda s: s.label)
def test_standard_grid_matches_paper(spec: ModelSpec) -> None:
    paper_params_m, paper_macs_m = PAPER_TABLE[_key(spec)]
    params, macs = _counts(spec)
    pairs = (("params", params / 1e6, paper_params_m), ("macs", macs / 1e6, paper_macs_m))
    for what, ours, paper in pairs:
        tol = _tolerance_m(what, paper, KNOWN_DEVIATIONS.get((_key(spec), what), REL_TOL))
        assert abs(ours - paper) <= tol, (
            f"{spec.label} {what}: ours {ours:.3f} M vs published {paper} M (allowed ±{tol:.3f} M)"
        )


def test_paper_table_covers_exactly_the_standard_grid() -> None:
    grid = standard_grid()
    keys = [_key(s) for s in grid]
    assert len(keys) == len(set(keys)) == 16 + 5 + 2 + 2
    assert set(keys) == set(PAPER_TABLE)
    for params_m, macs_m in PAPER_TABLE.values():
        assert 0 < params_m < 10 and 0 < macs_m < 1000


def test_standard_grid_contents() -> None:
    grid = standard_grid()
    v1 = {(s.width, s.resolution) for s in grid if s.name == "mobilenet_v1"}
    assert v1 == {(w, r) for w in (0.25, 0.5, 0.75, 1.0) for r in (224, 192, 160, 128)}
    assert {s.width for s in grid if s.name == "mobilenet_v2"} == {0.35, 0.5, 0.75, 1.0, 1.4}
    for name in ("mobilenet_v3_small", "mobilenet_v3_large"):
        assert {s.width for s in grid if s.name == name} == {0.75, 1.0}
    assert all(s.resolution == 224 for s in grid if s.name != "mobilenet_v1")
    assert all(s.num_classes == 1000 for s in grid)


# --- specs and labels ----------------------------------------------------------------------------


def test_zoo_names() -> None:
    assert set(ZOO_NAMES) == {
        "mobilenet_v1",
        "mobilenet_v2",
        "mobilenet_v3_small",
        "mobilenet_v3_large",
        "mobilenet_nas",
    }


@pytest.mark.parametrize(
    ("spec", "label"),
    [
        (ModelSpec("mobilenet_v2"), "mobilenet_v2_1.0_224"),
        (ModelSpec("mobilenet_v2", 1), "mobilenet_v2_1.0_224"),
        (ModelSpec("mobilenet_v1", 0.25, 128), "mobilenet_v1_0.25_128"),
        (ModelSpec("mobilenet_v2", 0.35, 224), "mobilenet_v2_0.35_224"),
        (ModelSpec("mobilenet_v3_large", 0.75), "mobilenet_v3_large_0.75_224"),
        (ModelSpec("mobilenet_v1", 0.5, 160, num_classes=10), "mobilenet_v1_0.5_160_10cls"),
    ],
)
def test_label(spec: ModelSpec, label: str) -> None:
    assert spec.label == label


def test_spec_is_frozen_and_hashable() -> None:
    spec = ModelSpec("mobilenet_v1")
    with pytest.raises(AttributeError):
        spec.width = 0.5  # type: ignore[misc]
    assert {spec: 1}[ModelSpec("mobilenet_v1", 1.0, 224, 1000)] == 1


# --- build ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("mobilenet_v1", MobileNetV1),
        ("mobilenet_v2", MobileNetV2),
        ("mobilenet_v3_small", MobileNetV3),
        ("mobilenet_v3_large", MobileNetV3),
    ],
)
def test_build_returns_eval_model_with_requested_classes(name: str, cls: type) -> None:
    width = 0.35 if name == "mobilenet_v2" else 0.25
    model = build(ModelSpec(name, width, 64, num_classes=7))
    assert isinstance(model, cls)
    assert not model.training and not any(m.training for m in model.modules())
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, 7)


def test_build_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError) as info:
        build(ModelSpec("resnet50"))
    message = str(info.value)
    assert "resnet50" in message
    for name in ZOO_NAMES:
        assert name in message
    assert isinstance(info.value, UserInputError)
    assert info.value.exit_code == EXIT_BAD_INPUT


@pytest.mark.parametrize(
    ("name", "width"),
    [
        ("mobilenet_v1", 1.25),
        ("mobilenet_v1", 1.4),
        ("mobilenet_v1", 0.0),
        ("mobilenet_v1", -0.5),
        ("mobilenet_v1", math.nan),
        ("mobilenet_v1", math.inf),
        ("mobilenet_v2", 1.5),
        ("mobilenet_v2", 0.0),
        ("mobilenet_v3_small", 1.3),
        ("mobilenet_v3_large", 2.0),
        ("mobilenet_v3_large", -1.0),
    ],
)
def test_build_rejects_unsupported_width(name: str, width: float) -> None:
    with pytest.raises(ValueError, match="width"):
        build(ModelSpec(name, width))


@pytest.mark.parametrize("width", [True, "1.0", None])
def test_build_rejects_non_numeric_width(width: object) -> None:
    with pytest.raises(ValueError, match="width"):
        build(ModelSpec("mobilenet_v1", width))  # type: ignore[arg-type]


@pytest.mark.parametrize("num_classes", [0, -3])
def test_build_rejects_bad_num_classes(num_classes: int) -> None:
    with pytest.raises(ValueError, match="num_classes"):
        build(ModelSpec("mobilenet_v1", 0.25, 64, num_classes=num_classes))


@pytest.mark.parametrize(
    ("name", "width"),
    [
        ("mobilenet_v1", 0.3),
        ("mobilenet_v1", 1.0),
        ("mobilenet_v2", 1.4),
        ("mobilenet_v3_large", 1.25),
    ],
)
def test_build_accepts_widths_inside_the_range(name: str, width: float) -> None:
    assert isinstance(build(ModelSpec(name, width)), nn.Module)


# --- preprocessing and minimum resolution --------------------------------------------------------


@pytest.mark.parametrize(
    ("resolution", "resize"), [(224, 256), (192, 219), (160, 183), (128, 146), (96, 110), (32, 37)]
)
def test_preprocessing(resolution: int, resize: int) -> None:
    pre = preprocessing_for(ModelSpec("mobilenet_v1", 1.0, resolution))
    assert pre == Preprocessing(
        resize=resize,
        crop=resolution,
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        interpolation="bilinear",
    )


def test_preprocessing_unknown_name() -> None:
    with pytest.raises(ValueError, match="unknown model"):
        preprocessing_for(ModelSpec("vgg16"))


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_min_resolution_is_the_total_stride(name: str) -> None:
    spec = ModelSpec(name, 0.35 if name == "mobilenet_v2" else 0.25, 32)
    assert min_resolution(spec) == 32
    total_stride = 1
    for m in build(spec).modules():
        if isinstance(m, nn.Conv2d):
            total_stride *= m.stride[0]
    assert total_stride == min_resolution(spec)


def test_min_resolution_unknown_name() -> None:
    with pytest.raises(ValueError, match="unknown model"):
        min_resolution(ModelSpec("nope"))
