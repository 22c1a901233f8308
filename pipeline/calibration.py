"""The calibration set every int8 quantizer uses: real images only, preprocessed as the model declares.

Sources, in order: the user's ``--calib`` folder, then the photos that ship with scikit-image.
Random noise is never used for calibration: it sets activation ranges no real image produces.
"""
from __future__ import annotations

import numpy as np

from pipeline.context import RunContext
from pipeline.data import image_folder, preprocess, sample_photos

DEFAULT_CALIBRATION_IMAGES = 64


def calibration_batch(ctx: RunContext, limit: int = DEFAULT_CALIBRATION_IMAGES) -> np.ndarray:
    """(N, 3, H, W) float32 calibration inputs, at most ``limit`` of them."""
    prep = ctx.source.preprocessing
    images: list[tuple[str, np.ndarray]] = []
    if ctx.config.calib is not None:
        images += image_folder(ctx.config.calib, limit=limit)
    if len(images) < limit:
        images += sample_photos()[: limit - len(images)]
    return np.stack([preprocess(image, prep) for _, image in images]).astype(np.float32)


def calibration_identity(ctx: RunContext, limit: int = DEFAULT_CALIBRATION_IMAGES) -> dict:
    """What the calibration set depends on, for the cache keys of the stages that use it."""
    return {"calib": ctx.calib_identity, "limit": limit}
