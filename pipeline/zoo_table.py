"""The zoo's standard grid with measured parameter/MAC counts beside the papers' figures."""
from __future__ import annotations

from typing import Any

from pipeline.models.counting import count_macs, count_params, fp32_bytes
from pipeline.models.registry import PAPER_TABLE, build, standard_grid


def zoo_rows() -> list[dict[str, Any]]:
    """One row per standard-grid entry: name, width, resolution, params, macs, fp32_bytes, paper."""
    rows = []
    built: dict[tuple[str, float], Any] = {}
    for spec in standard_grid():
        model = built.get((spec.name, spec.width))
        if model is None:
            model = built[(spec.name, spec.width)] = build(spec)
        paper_params, paper_macs = PAPER_TABLE[(spec.name, spec.width, spec.resolution)]
        rows.append({"name": spec.name, "width": spec.width, "resolution": spec.resolution,
                     "params": count_params(model), "macs": count_macs(model, spec.resolution),
                     "fp32_bytes": fp32_bytes(model), "paper_params_m": paper_params,
                     "paper_macs_m": paper_macs})
    return rows
