"""Per-precision layer tolerances: how far one layer's tensor may be from the reference's
before localisation calls it the cause (``layer_tolerances`` in the config overrides them)."""
from __future__ import annotations

from typing import Mapping

from pydantic import BaseModel, ConfigDict, Field


class LayerTolerance(BaseModel):
    """Limits one layer's tensor must meet; ``None`` disables a check."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_rel: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    min_cosine: float | None = Field(default=None, ge=-1, le=1)


#: fp32 layers agree to float rounding (measured ~1e-6 of the range); fp16 rounds each layer's
#: output to 11 bits (~5e-4 of the range, growing with depth); int8 adds a quantization step per
#: tensor, so only a collapse of the tensor's direction is a fault, not its noise.
DEFAULT_LAYER_TOLERANCES: dict[str, LayerTolerance] = {
    "fp32": LayerTolerance(max_rel=1e-3, min_cosine=0.9999),
    "fp16": LayerTolerance(max_rel=0.05, min_cosine=0.995),
    "int8": LayerTolerance(min_cosine=0.8),
}


def layer_tolerance_for(precision: str,
                        overrides: Mapping[str, LayerTolerance] | None = None) -> LayerTolerance:
    """The default layer tolerance of ``precision`` with an override's set fields on top."""
    override = (overrides or {}).get(precision)
    base = DEFAULT_LAYER_TOLERANCES.get(precision, DEFAULT_LAYER_TOLERANCES["fp32"])
    if override is None:
        return base
    return LayerTolerance.model_validate(base.model_dump()
                                         | override.model_dump(include=override.model_fields_set))
