"""The calibration set every int8 quantizer uses: real images only, preprocessed as the model declares.

Source, in order of preference: the user's ``--calib`` folder; the calibration split of the
built-in dataset (``--dataset digits``); the photos that ship with scikit-image. Random noise is
never used: it sets activation ranges no real image produces.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.context import RunContext
from pipeline.data import digits_splits, image_folder, preprocess, sample_photos


@dataclass
class CalibrationSet:
    batch: np.ndarray            # (N, 3, H, W) float32
    source: str
    warnings: list[str] = field(default_factory=list)


DEFAULT_CALIBRATION_IMAGES = 64


def calibration_set(ctx: RunContext, limit: int | None = None) -> CalibrationSet:
    """At most ``limit`` (default: the config's ``calib_images``) real calibration inputs, with a
    warning when there are fewer; read and preprocessed once per run (kept in the run context)
    however many int8 stages ask. Callers must not modify the batch."""
    key = ("calibration-set", limit or ctx.config.calib_images)
    if key not in ctx.memo:
        ctx.memo[key] = _read_calibration_set(ctx, key[1])
    return ctx.memo[key]


def _read_calibration_set(ctx: RunContext, wanted: int) -> CalibrationSet:
    prep = ctx.source.preprocessing
    if ctx.config.calib is not None:
        images = [img for _, img in image_folder(ctx.config.calib, limit=wanted,
                                                      what="calibration folder")]
        source = f"folder {ctx.config.calib}"
    elif ctx.config.dataset == "digits":
        split = digits_splits(ctx.config.parity.seed)["calib"]
        images = split.images[:wanted]
        source = "scikit-learn digits, calibration split"
    else:
        images = [img for _, img in sample_photos()][:wanted]
        source = "scikit-image sample photos"
    warnings = []
    if len(images) < wanted:
        warnings.append(f"calibration used {len(images)} images from {source}, fewer than the "
                        f"{wanted} requested (calib_images); int8 ranges may be less reliable")
    batch = np.stack([preprocess(image, prep) for image in images]).astype(np.float32)
    return CalibrationSet(batch, source, warnings)


def calibration_batch(ctx: RunContext, limit: int | None = None) -> np.ndarray:
    """(N, 3, H, W) float32 calibration inputs (see :func:`calibration_set`)."""
    return calibration_set(ctx, limit).batch


def calibration_identity(ctx: RunContext, limit: int | None = None) -> dict:
    """What the calibration set depends on, for the cache keys of the stages that use it."""
    return {"calib": ctx.calib_identity, "dataset": ctx.config.dataset,
            "seed": ctx.config.parity.seed, "limit": limit or ctx.config.calib_images}
