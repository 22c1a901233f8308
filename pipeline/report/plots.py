"""The report's plots, as inline SVG text (matplotlib, no pyplot: no global state, no display).

Each function takes report.json's nodes and returns an SVG string, or None when no node has
what the plot shows. Output is deterministic (fixed hash salt, no date), so the same report
renders to the same bytes.
"""
from __future__ import annotations

import io
from typing import Any

VERDICT_COLOURS = {"pass": "#2e7d32", "fail": "#c62828"}
OTHER_COLOUR = "#757575"        # unverified, skipped, unavailable
KEPT_COLOUR, QUANTIZED_COLOUR = "#ef6c00", "#90a4ae"
#: 1 - cosine and relative errors below this are drawn at it (log axes cannot show 0)
FLOOR = 1e-9


def _colour(node: dict[str, Any]) -> str:
    return VERDICT_COLOURS.get((node.get("parity") or {}).get("verdict"), OTHER_COLOUR)


def _figure(rows: int, width: float = 7.5) -> Any:
    from matplotlib import rcParams
    from matplotlib.figure import Figure

    rcParams["svg.hashsalt"] = "mobile-export"
    rcParams["svg.fonttype"] = "none"      # text stays text: smaller, searchable
    return Figure(figsize=(width, max(1.6, 0.32 * rows + 1.0)), layout="constrained")


def _log_x(axes: Any) -> None:
    """Log x axis with plain ``1e-06`` labels (matplotlib's default 10^k labels go through
    mathtext, which costs about a second per plot)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axes.set_xscale("log")
    axes.xaxis.set_major_locator(LogLocator(numticks=8))
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:.0e}"))
    axes.xaxis.set_minor_formatter(NullFormatter())


def _svg(figure: Any) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    return text[text.index("<svg"):]         # drop the XML prolog and doctype: inline SVG


def latency_svg(nodes: list[dict[str, Any]]) -> str | None:
    """Median latency per node (bar) with its p90 (whisker), on each node's own runtime."""
    timed = [n for n in nodes if (n.get("latency") or {}).get("median_ms")]
    if not timed:
        return None
    figure = _figure(len(timed))
    axes = figure.subplots()
    labels = [f"{n['name']} ({n['latency'].get('runtime', n['target'])})" for n in timed]
    medians = [n["latency"]["median_ms"] for n in timed]
    spread = [max(0.0, (n["latency"].get("p90_ms") or m) - m) for n, m in zip(timed, medians)]
    positions = list(range(len(timed)))[::-1]
    axes.barh(positions, medians, xerr=[[0] * len(timed), spread], color=[_colour(n) for n in timed],
              error_kw={"ecolor": "#333333", "capsize": 3})
    axes.set_yticks(positions, labels)
    axes.set_xlabel("batch-1 latency, ms (median; whisker: p90)")
    axes.grid(axis="x", alpha=0.3)
    return _svg(figure)


def parity_svg(nodes: list[dict[str, Any]]) -> str | None:
    """Two panels per node: 1 - centred cosine and max relative error (log scales), each with
    the node's own limit marked where it has one; colour = verdict."""
    judged = [n for n in nodes if (n.get("parity") or {}).get("cosine") is not None
              or (n.get("parity") or {}).get("max_rel") is not None]
    if not judged:
        return None
    figure = _figure(len(judged), width=9.0)
    cos_axes, rel_axes = figure.subplots(1, 2, sharey=True)
    positions = list(range(len(judged)))[::-1]
    for axes, metric, limit_key, title in (
            (cos_axes, "cosine", "min_cosine", "1 − centred cosine (worst input)"),
            (rel_axes, "max_rel", "max_rel", "max error / output range")):
        values, limits = [], []
        for node in judged:
            parity = node["parity"]
            value = parity.get(metric)
            if metric == "cosine" and value is not None:
                value = 1.0 - value
            values.append(max(FLOOR, value) if value is not None else FLOOR)
            limit = (parity.get("tolerance") or {}).get(limit_key)
            limits.append(None if limit is None else (1.0 - limit if metric == "cosine" else limit))
        axes.barh(positions, values, color=[_colour(n) for n in judged])
        for position, limit in zip(positions, limits):
            if limit is not None and limit > 0:
                axes.plot([limit, limit], [position - 0.4, position + 0.4], color="#000000",
                          linewidth=2)
        _log_x(axes)
        axes.set_xlabel(title)
        axes.grid(axis="x", alpha=0.3)
    cos_axes.set_yticks(positions, [n["name"] for n in judged])
    return _svg(figure)


def accuracy_svg(nodes: list[dict[str, Any]]) -> str | None:
    """Accuracy on the labelled evaluation set per node, with its 95 % interval and the
    reference's accuracy as a line."""
    scored = [n for n in nodes if (n.get("accuracy") or {}).get("value") is not None]
    if not scored:
        return None
    figure = _figure(len(scored))
    axes = figure.subplots()
    positions = list(range(len(scored)))[::-1]
    for position, node in zip(positions, scored):
        acc = node["accuracy"]
        low, high = acc.get("ci_low", acc["value"]), acc.get("ci_high", acc["value"])
        axes.errorbar([100 * acc["value"]], [position],
                      xerr=[[100 * (acc["value"] - low)], [100 * (high - acc["value"])]],
                      fmt="o", color=_colour(node), capsize=3)
    reference = next((n["accuracy"].get("reference") for n in scored
                      if n["accuracy"].get("reference") is not None), None)
    if reference is not None:
        axes.axvline(100 * reference, color="#000000", linestyle="--", linewidth=1)
    axes.set_yticks(positions, [n["name"] for n in scored])
    axes.set_xlabel("accuracy, % (95 % interval; dashed: reference)")
    axes.grid(axis="x", alpha=0.3)
    return _svg(figure)


def sensitivity_svg(node: dict[str, Any], top: int = 20) -> str | None:
    """An int8 node's mixed-precision search: the most sensitive layers' error when quantized
    alone (log scale), the layers kept in float highlighted, the all-int8 error as a line."""
    mixed = (node.get("info") or {}).get("mixed_precision") or {}
    ranked = list((mixed.get("sensitivity") or {}).items())[:top]
    if not ranked:
        return None
    kept = set(mixed.get("float_layers") or []) if mixed.get("cost") else set()
    layers = mixed.get("layers") or {}
    figure = _figure(len(ranked))
    axes = figure.subplots()
    positions = list(range(len(ranked)))[::-1]
    axes.barh(positions, [max(FLOOR, error) for _, error in ranked],
              color=[KEPT_COLOUR if name in kept else QUANTIZED_COLOUR for name, _ in ranked])
    if mixed.get("int8_error"):
        axes.axvline(mixed["int8_error"], color="#000000", linestyle="--", linewidth=1)
    _log_x(axes)
    axes.set_yticks(positions, [layers.get(name, {}).get("label", name)[:48] for name, _ in ranked])
    axes.set_xlabel("output error, layer alone quantized")
    axes.grid(axis="x", alpha=0.3)
    return _svg(figure)


def training_svg(node: dict[str, Any]) -> str | None:
    """A training node's curves: the mean training loss (left axis) and the validation accuracy
    (right axis) per epoch."""
    history = (node.get("info") or {}).get("history") or []
    points = [h for h in history
              if isinstance(h, dict) and {"epoch", "loss", "val_accuracy"} <= set(h)]
    if not points:
        return None
    figure = _figure(6, width=7.5)
    loss_axes = figure.subplots()
    epochs = [int(h["epoch"]) + 1 for h in points]
    losses = [h["loss"] if h["loss"] is not None else float("nan") for h in points]
    loss_axes.plot(epochs, losses, marker="o", color="#1565c0", label="training loss")
    loss_axes.set_xlabel("epoch")
    loss_axes.set_ylabel("training loss", color="#1565c0")
    loss_axes.set_xticks(epochs)
    loss_axes.grid(alpha=0.3)
    accuracy_axes = loss_axes.twinx()
    accuracy_axes.plot(epochs, [100 * h["val_accuracy"] for h in points], marker="s",
                       color="#2e7d32", label="validation accuracy")
    accuracy_axes.set_ylabel("validation accuracy, %", color="#2e7d32")
    accuracy_axes.set_ylim(0, 100)
    return _svg(figure)


def localisation_svg(nodes: list[dict[str, Any]], ticks: int = 24) -> str | None:
    """Error against depth for each localised node: 1 − centred cosine per layer (log scale)
    over the layers in graph order, the node's layer limit dashed in its colour, a marker on
    its first divergent layer. x labels: the torch module paths."""
    curves = [(n, n["localisation"]) for n in nodes
              if (n.get("localisation") or {}).get("curve")]
    if not curves:
        return None
    order: list[str] = []
    for _, record in curves:                    # every curve is in graph order
        order += [p["onnx_tensor"] for p in record["curve"] if p["onnx_tensor"] not in order]
    position = {name: i for i, name in enumerate(order)}
    labels = {p["onnx_tensor"]: p["torch_module"] for _, r in curves for p in r["curve"]}
    figure = _figure(8, width=9)
    axes = figure.subplots()
    palette = ["#1565c0", "#c62828", "#2e7d32", "#6a1b9a", "#ef6c00", "#00838f", "#5d4037"]
    for index, (node, record) in enumerate(curves):
        colour = palette[index % len(palette)]
        points = [(position[p["onnx_tensor"]], max(FLOOR, 1 - (p["cosine"] if p["cosine"]
                                                            is not None else -1)))
                  for p in record["curve"]]
        axes.plot([x for x, _ in points], [y for _, y in points], color=colour, linewidth=1.2,
                  label=node["name"])
        limit = (record.get("limit") or {}).get("min_cosine")
        if limit is not None:
            axes.axhline(max(FLOOR, 1 - limit), color=colour, linestyle="--", linewidth=0.8)
        first = record.get("first_divergent")
        if first and first["onnx_tensor"] in position:
            x = position[first["onnx_tensor"]]
            axes.plot([x], [dict(points).get(x, FLOOR)], marker="o", color=colour)
    axes.set_yscale("log")
    step = max(1, len(order) // ticks)
    axes.set_xticks(range(0, len(order), step),
                    [labels[name][:32] for name in order[::step]], rotation=90, fontsize=7)
    axes.set_ylabel("1 − centred cosine")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    return _svg(figure)
