"""The sweep's plots, as inline SVG text (matplotlib without pyplot: no global state, no display).

One scatter per node key: accuracy (with its 95 % interval) against median latency, marker area by
artifact size, the Pareto front as a step line, the latency budget and the frame-rate target as
vertical lines, each point labelled with its job. Without accuracy the scatter is artifact size
against median latency. Output is deterministic (fixed hash salt, no date): the same rows render to
the same bytes.
"""
from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from pipeline.report.plots import OTHER_COLOUR, VERDICT_COLOURS
from pipeline.sweep.pareto import ACCURACY, accuracy_of, eligible, median_of, size_of

MIB = float(1 << 20)
#: marker areas (points²) of the smallest and the largest artifact of a plot
MIN_AREA, MAX_AREA = 30.0, 360.0
FRONT_COLOUR = "#1565c0"
SVG_RC = {"svg.hashsalt": "mobile-export", "svg.fonttype": "none"}


def _svg(figure: Any) -> str:
    from matplotlib import rc_context

    buffer = io.StringIO()
    with rc_context(SVG_RC):
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    return text[text.index("<svg"):]         # drop the XML prolog and doctype: inline SVG


def _colour(row: dict[str, Any], node: dict[str, Any]) -> str:
    if eligible(row, node):
        return VERDICT_COLOURS["pass"]
    return VERDICT_COLOURS["fail"] if node.get("verdict") == "fail" else OTHER_COLOUR


def plotted(rows: Sequence[dict[str, Any]], key: str, axis: str) -> list[tuple[dict, dict]]:
    """``(row, node)`` of ``key`` that the plot can place: a median latency, and an accuracy
    (``axis == "accuracy"``) or an artifact size (otherwise)."""
    value = accuracy_of if axis == ACCURACY else size_of
    return [(row, node) for row in rows
            if (node := (row.get("nodes") or {}).get(key)) is not None
            and median_of(node) is not None and value(node) is not None]


def _areas(nodes: list[dict[str, Any]]) -> list[float]:
    sizes = [size_of(node) for node in nodes]
    known = [s for s in sizes if s]
    if not known:
        return [MIN_AREA * 2] * len(nodes)
    low, high = min(known), max(known)
    span = (high - low) or 1.0
    return [MIN_AREA if not s else MIN_AREA + (MAX_AREA - MIN_AREA) * (s - low) / span
            for s in sizes]


def key_svg(rows: Sequence[dict[str, Any]], key: str, axis: str, *,
            latency_budget_ms: float | None = None,
            target_fps: float | None = None) -> str | None:
    """The scatter of one node key (module docstring), or None when no node of it can be placed.
    ``axis`` is what the key's front was drawn on (:func:`pipeline.sweep.pareto.mark_pareto`)."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    points = plotted(rows, key, axis)
    if not points:
        return None
    by_accuracy = axis == ACCURACY
    figure = Figure(figsize=(7.5, 4.8), layout="constrained")
    axes = figure.subplots()
    nodes = [node for _, node in points]
    xs = [median_of(node) for node in nodes]
    ys = [100 * accuracy_of(n) if by_accuracy else size_of(n) / MIB  # type: ignore[operator]
          for n in nodes]
    colours = [_colour(row, node) for row, node in points]
    if by_accuracy:
        for node, x, y, colour in zip(nodes, xs, ys, colours):
            acc = node["accuracy"]
            low = 100 * (acc.get("ci_low") if acc.get("ci_low") is not None else acc["value"])
            high = 100 * (acc.get("ci_high") if acc.get("ci_high") is not None else acc["value"])
            axes.errorbar([x], [y], yerr=[[max(0.0, y - low)], [max(0.0, high - y)]], fmt="none",
                          ecolor=colour, elinewidth=1, capsize=3, alpha=0.7)
    axes.scatter(xs, ys, s=_areas(nodes) if by_accuracy else MIN_AREA * 2, c=colours,
                 alpha=0.85, edgecolors="#212121", linewidths=0.5, zorder=3)
    for (row, _), x, y in zip(points, xs, ys):
        axes.annotate(row["job"], (x, y), xytext=(5, 4), textcoords="offset points", fontsize=7)
    front = sorted((x, y) for (x, y, node) in zip(xs, ys, nodes) if node.get("pareto"))
    legend = (("passed", VERDICT_COLOURS["pass"]), ("failed", VERDICT_COLOURS["fail"]),
              ("unverified / job not ok", OTHER_COLOUR))
    handles = [Line2D([], [], marker="o", linestyle="", color=colour, label=label)
               for label, colour in legend if colour in colours]
    if front:
        axes.step([x for x, _ in front], [y for _, y in front], where="post",
                  color=FRONT_COLOUR, linewidth=1.5, zorder=2)
        handles.append(Line2D([], [], color=FRONT_COLOUR, label="Pareto front"))
    if latency_budget_ms is not None:
        axes.axvline(latency_budget_ms, color="#000000", linestyle="--", linewidth=1)
        handles.append(Line2D([], [], color="#000000", linestyle="--",
                              label=f"budget {latency_budget_ms:g} ms"))
    if target_fps:
        axes.axvline(1000.0 / target_fps, color="#6a1b9a", linestyle=":", linewidth=1.2)
        handles.append(Line2D([], [], color="#6a1b9a", linestyle=":",
                              label=f"{target_fps:g} FPS ({1000.0 / target_fps:.3g} ms)"))
    axes.margins(x=0.15, y=0.1)                # room for the job labels
    axes.legend(handles=handles, fontsize=7, loc="best")
    axes.set_xlabel("median latency, ms (batch 1, on this key's runtime)")
    axes.set_ylabel("accuracy, % (95 % interval)" if by_accuracy
                    else "artifact size, MiB (accuracy not measured)")
    axes.set_title(key if by_accuracy else f"{key}: accuracy not measured — size vs latency",
                   fontsize=10)
    axes.grid(alpha=0.3)
    return _svg(figure)
