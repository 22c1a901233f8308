"""The zoo's standard grid with measured parameter/MAC counts beside the papers' figures, and the
``mobilenet_nas`` search space with its measured counts (it has no published figures)."""
from __future__ import annotations

from dataclasses import asdict
from typing import Any

from rich.table import Table

from pipeline.models.counting import count_macs, count_params, fp32_bytes
from pipeline.models.nas_space import nas_space
from pipeline.models.registry import PAPER_TABLE, ModelSpec, build, standard_grid


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


def nas_rows(width: float = 1.0, resolution: int = 224) -> list[dict[str, Any]]:
    """One row per point of the NAS space (36) at ``width`` and ``resolution``: name, label,
    width, resolution, depth_multiplier, kernel_size, activation, blocks, params, macs,
    fp32_bytes. The activation changes no count (activations have no parameters and MACs count
    only convolutions and linear layers), so each (depth, kernel) network is counted once."""
    rows = []
    counted: dict[tuple[float, int], dict[str, int]] = {}
    for choice in nas_space():
        spec = ModelSpec("mobilenet_nas", width, resolution, nas=choice)
        key = (choice.depth_multiplier, choice.kernel_size)
        if key not in counted:
            model = build(spec)
            counted[key] = {"blocks": model.num_blocks, "params": count_params(model),
                            "macs": count_macs(model, resolution), "fp32_bytes": fp32_bytes(model)}
        rows.append({"name": spec.name, "label": spec.label, "width": spec.width,
                     "resolution": spec.resolution, **asdict(choice), **counted[key]})
    return rows


def nas_table(rows: list[dict[str, Any]]) -> Table:
    """The :func:`nas_rows` as a terminal table."""
    table = Table(title="mobilenet_nas search space (MACs = multiply-adds, batch 1)")
    for column in ("label", "depth", "kernel", "activation", "blocks", "params", "MACs",
                   "fp32 size"):
        table.add_column(column, justify="left" if column in ("label", "activation") else "right")
    for r in rows:
        table.add_row(r["label"], f"{r['depth_multiplier']:g}", str(r["kernel_size"]),
                      r["activation"], str(r["blocks"]), f"{r['params']:,}",
                      f"{r['macs'] / 1e6:,.1f} M", f"{r['fp32_bytes'] / 2**20:.1f} MiB")
    return table
