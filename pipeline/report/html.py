"""report.html: report.json's facts for people, self-contained (inline CSS and SVG plots, no
script, nothing fetched), rendered with Jinja2 (autoescaped) from ``report.html.j2``."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from pipeline.report import plots
from pipeline.report.markdown import HEADER, fmt, node_notes, node_row, problem_nodes

TEMPLATE = Path(__file__).with_name("report.html.j2")


@lru_cache(maxsize=1)
def _template() -> Any:
    from jinja2 import Environment, StrictUndefined

    environment = Environment(autoescape=True, undefined=StrictUndefined, trim_blocks=True,
                              lstrip_blocks=True)
    return environment.from_string(TEMPLATE.read_text())


def verdict_class(verdict: str) -> str:
    return verdict if verdict in ("pass", "fail") else "other"


def report_plots(nodes: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The plots that have data: ``[{"svg", "caption"}]``."""
    made = [(plots.latency_svg(nodes), "Latency of each node on its own runtime "
                                       "(colour: parity verdict)."),
            (plots.parity_svg(nodes), "Parity against the PyTorch reference: 1 − centred "
                                      "cosine on the worst input and max error relative to the "
                                      "output range (log scales; black tick: the node's limit; "
                                      "colour: verdict)."),
            (plots.accuracy_svg(nodes), "Accuracy on the labelled evaluation set with its 95 % "
                                        "interval; dashed line: the reference's accuracy.")]
    made.append((plots.localisation_svg(nodes), "Where each localised node (failed ones; every "
                 "verified one with --localise all) starts to drift: "
                 "1 − centred cosine of every layer against the PyTorch reference, in graph "
                 "order (log scale); dashed: the node's layer limit; dot: its first divergent "
                 "layer (the cause, see the notes)."))
    for node in nodes:
        made.append((plots.training_svg(node), f"{node['name']}: training loss (blue, left) "
                     "and validation accuracy (green, right) per epoch."))
        made.append((plots.sensitivity_svg(node), f"{node['name']}: the most sensitive layers "
                     "(output error with that layer alone quantized, log scale); orange: kept "
                     "in float by the mixed-precision fallback; dashed: the all-int8 model's "
                     "error."))
    return [{"svg": svg, "caption": caption} for svg, caption in made if svg]


def render_html(report: dict[str, Any]) -> str:
    nodes = report["nodes"]
    return _template().render(
        model=report["model"], machine=report.get("machine") or {}, run=report["run"],
        exit_code=report["exit_code"], nodes=nodes, header=HEADER,
        rows=[node_row(n) for n in nodes], problems=problem_nodes(report),
        notes=node_notes(nodes), plots=report_plots(nodes), fmt=fmt,
        verdict_class=verdict_class)
