"""The answer of a sweep: sweep.json, sweep.md and sweep.html, written atomically into one folder.

sweep.json holds every row (sorted by job, each node's ``pareto`` flag set), the recommendations per
node key and a summary; sweep.md is the model-comparison table per node key with the failed jobs and
the recommendations; sweep.html adds one scatter per node key (pipeline.sweep.plots). The same rows
render to the same bytes (rows sorted, no clock read, deterministic SVG).
"""
from __future__ import annotations

import copy
import json
import os
import sys
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from pipeline.files import atomic_write_bytes, sweep_temp
from pipeline.report.markdown import fmt
from pipeline.sweep.pareto import ACCURACY, mark_pareto
from pipeline.sweep.plots import key_svg, plotted
from pipeline.sweep.recommend import fps_of, machine_label, recommend

SCHEMA = 1
SWEEP_JSON, SWEEP_MD, SWEEP_HTML = "sweep.json", "sweep.md", "sweep.html"
TEMPLATE = Path(__file__).with_name("sweep.html.j2")
STATUSES = ("ok", "gate_failed", "failed", "timeout", "interrupted")
JOB_HEADER = ["job", "model", "α", "ρ", "NAS", "fine-tune epochs", "status", "params", "MACs",
              "reference accuracy", "seconds", "cached"]
NODE_HEADER = ["job", "model", "α", "ρ", "params", "MACs", "verdict", "accuracy", "median ms",
               "p90 ms", "FPS (1000 / median)", "size", "peak memory MiB", "Pareto"]
PARETO_MARK = "★"


def fmt_accuracy(accuracy: dict[str, Any] | None) -> str:
    """``71.2 % (70.1–72.3)``, or ``—`` when not measured."""
    if not accuracy or accuracy.get("value") is None:
        return "—"
    text = f"{100 * accuracy['value']:.1f} %"
    if accuracy.get("ci_low") is not None and accuracy.get("ci_high") is not None:
        text += f" ({100 * accuracy['ci_low']:.1f}–{100 * accuracy['ci_high']:.1f})"
    return text


def fmt_bytes(size: Any) -> str:
    """An artifact size in KiB or MiB."""
    if not isinstance(size, (int, float)) or isinstance(size, bool):
        return "—"
    return f"{size / 1024:.1f} KiB" if size < 1 << 20 else f"{size / (1 << 20):.2f} MiB"


def job_cells(row: dict[str, Any]) -> list[str]:
    """The jobs table's cells of one row (:data:`JOB_HEADER`)."""
    config = row.get("config") or {}
    return [row["job"], str(config.get("model", "—")), fmt(config.get("width")),
            fmt(config.get("resolution")), "yes" if config.get("nas") else "—",
            fmt(config.get("finetune_epochs")), row.get("status", "—"), fmt(row.get("params")),
            fmt(row.get("macs")), fmt_accuracy(row.get("accuracy")),
            fmt(row.get("seconds"), ".1f"), "yes" if row.get("cached") else "—"]


def node_cells(row: dict[str, Any], node: dict[str, Any]) -> list[str]:
    """A node key's table cells of one row (:data:`NODE_HEADER`)."""
    config = row.get("config") or {}
    latency = node.get("latency_ms") or {}
    fps = fps_of(node)
    return [row["job"], str(config.get("model", "—")), fmt(config.get("width")),
            fmt(config.get("resolution")), fmt(row.get("params")), fmt(row.get("macs")),
            node.get("verdict") or "—", fmt_accuracy(node.get("accuracy")),
            fmt(latency.get("median"), ".2f"), fmt(latency.get("p90"), ".2f"),
            fmt(fps, ".1f"), fmt_bytes(node.get("size_bytes")),
            fmt(node.get("peak_memory_mb"), ".1f"), PARETO_MARK if node.get("pareto") else ""]


def _common_machine(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    machines = {json.dumps(r.get("machine") or {}, sort_keys=True, default=str): r.get("machine")
                for r in rows if r.get("machine")}
    return next(iter(machines.values())) if len(machines) == 1 else None


def summarise(rows: Sequence[dict[str, Any]], axes: dict[str, str]) -> dict[str, Any]:
    """Counts by status, cached jobs, total seconds, node keys, each key's front (jobs) and axis."""
    counts = {status: sum(r.get("status") == status for r in rows) for status in STATUSES}
    machines = {json.dumps(r.get("machine") or {}, sort_keys=True, default=str)
                for r in rows if r.get("machine")}
    return {"jobs": len(rows), **counts,
            "cached": sum(bool(r.get("cached")) for r in rows),
            "seconds": round(sum(float(r.get("seconds") or 0.0) for r in rows), 3),
            "machines": len(machines), "node_keys": list(axes),
            "pareto": {key: [r["job"] for r in rows if ((r.get("nodes") or {}).get(key) or {})
                             .get("pareto")] for key in axes},
            "front_axes": axes}


def build_sweep(rows: Sequence[dict[str, Any]], *, latency_budget_ms: float | None = None,
                target_fps: float | None = None, title: str = "sweep") -> dict[str, Any]:
    """The sweep.json document of ``rows`` (copied, sorted by job, Pareto flags set)."""
    ordered = sorted(copy.deepcopy(list(rows)), key=lambda r: str(r.get("job")))
    axes = mark_pareto(ordered)
    machine = _common_machine(ordered)
    return {"schema": SCHEMA, "title": title, "machine": machine,
            "latency_budget_ms": latency_budget_ms, "target_fps": target_fps,
            "rows": ordered,
            "recommendations": recommend(ordered, latency_budget_ms=latency_budget_ms,
                                         target_fps=target_fps),
            "summary": summarise(ordered, axes)}


def machine_line(doc: dict[str, Any]) -> str:
    """Which machine the figures were measured on (or how many, when the rows differ)."""
    if doc["machine"]:
        return machine_label(doc["machine"])
    labels = sorted({machine_label(r.get("machine")) for r in doc["rows"] if r.get("machine")})
    if not labels:
        return "unknown machine (no row records one)"
    return (f"{doc['summary']['machines']} different machines: {'; '.join(labels)} — each node "
            "key's recommendations say which")


def budget_line(doc: dict[str, Any]) -> str | None:
    """The latency budget / frame-rate target, or None when neither was given."""
    parts = []
    if doc["latency_budget_ms"] is not None:
        parts.append(f"latency budget {doc['latency_budget_ms']:g} ms (median)")
    if doc["target_fps"]:
        parts.append(f"target {doc['target_fps']:g} FPS ({1000 / doc['target_fps']:.3g} ms)")
    return "; ".join(parts) or None


def pick_text(pick: dict[str, Any], with_machine: bool = False) -> str:
    """One recommendation in words: the job and its figures, or why there is none."""
    if pick["job"] is None:
        return f"{pick['criterion']}: none — {pick['reason']}"
    f = pick["figures"]
    text = (f"{pick['criterion']}: {pick['job']} — accuracy {fmt_accuracy(f['accuracy'])}, "
            f"median {fmt(f['median_ms'], '.2f')} ms (p90 {fmt(f['p90_ms'], '.2f')}), "
            f"{fmt(f['fps'], '.1f')} FPS, {fmt_bytes(f['size_bytes'])}, peak memory "
            f"{fmt(f['peak_memory_mb'], '.1f')} MiB")
    return text + (f"; measured on {f['machine']}" if with_machine else "")


def unfinished(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows whose status is not ok, each with its reason."""
    return [r for r in doc["rows"] if r.get("status") != "ok"]


def key_caption(doc: dict[str, Any], key: str) -> str:
    """What a key's front and plot show."""
    if doc["summary"]["front_axes"][key] == ACCURACY:
        return (f"{key}: accuracy (95 % interval) against median latency; marker area: artifact "
                "size; blue steps: the Pareto front of passing nodes; vertical lines: the budget.")
    return (f"{key}: accuracy was not measured (no labelled dataset), so this shows artifact size "
            "against median latency; blue steps: the front of smaller-and-faster passing nodes.")


def key_sections(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Per node key: its table rows, recommendation, caption and what was left off the plot."""
    sections = []
    for key in doc["summary"]["node_keys"]:
        pairs = [(r, r["nodes"][key]) for r in doc["rows"] if key in (r.get("nodes") or {})]
        axis = doc["summary"]["front_axes"][key]
        shown = len(plotted(doc["rows"], key, axis))
        sections.append({"key": key, "axis": axis, "caption": key_caption(doc, key),
                         "rows": [node_cells(r, n) for r, n in pairs],
                         "unplotted": len(pairs) - shown,
                         "recommendation": doc["recommendations"][key]})
    return sections


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |" for cells in rows)]


def render_markdown(doc: dict[str, Any]) -> str:
    """sweep.md: summary, jobs, the comparison table and recommendations per key, failures."""
    s = doc["summary"]
    lines = [f"# mobile-export sweep: {doc['title']}", "",
             f"- jobs: {s['jobs']} (ok {s['ok']}, gate failed {s['gate_failed']}, failed "
             f"{s['failed']}, timed out {s['timeout']}, interrupted {s['interrupted']}; cached "
             f"{s['cached']}), {s['seconds']:.1f} s in all",
             f"- measured on: {machine_line(doc)}"]
    if budget_line(doc):
        lines.append(f"- {budget_line(doc)}")
    lines += ["", "## Jobs", "", *_table(JOB_HEADER, [job_cells(r) for r in doc["rows"]])]
    for section in key_sections(doc):
        rec = section["recommendation"]
        lines += ["", f"## {section['key']}", "", *_table(NODE_HEADER, section["rows"]), "",
                  f"{PARETO_MARK}: on the Pareto front ("
                  f"{'accuracy' if section['axis'] == ACCURACY else 'size, accuracy not measured'}"
                  " against median latency, passing nodes only).", "",
                  f"Recommendations (measured on {rec['machine'] or 'no machine'}):", ""]
        lines += [f"- {pick_text(p, with_machine=bool(rec['note']))}" for p in rec["picks"]]
        if rec["note"]:
            lines.append(f"- note: {rec['note']}")
    if not s["node_keys"]:
        lines += ["", "No job produced a node to compare."]
    if unfinished(doc):
        lines += ["", "## Jobs that did not finish cleanly", ""]
        lines += [f"- **{r['job']}** — {r.get('status')}: {r.get('reason') or 'no reason given'}"
                  for r in unfinished(doc)]
    return "\n".join(lines) + "\n"


@lru_cache(maxsize=1)
def _template() -> Any:
    from jinja2 import Environment, StrictUndefined

    environment = Environment(autoescape=True, undefined=StrictUndefined, trim_blocks=True,
                              lstrip_blocks=True)
    return environment.from_string(TEMPLATE.read_text(encoding="utf-8"))


def _report_link(row: dict[str, Any], out_dir: Path) -> str | None:
    if not row.get("run_dir") or row.get("status") not in ("ok", "gate_failed"):
        return None
    return Path(os.path.relpath(Path(row["run_dir"]) / "report.html", out_dir)).as_posix()


def render_html(doc: dict[str, Any], out_dir: Path) -> str:
    """sweep.html: the markdown's facts plus one scatter per node key, self-contained."""
    sections = key_sections(doc)
    for section in sections:
        section["svg"] = key_svg(doc["rows"], section["key"], section["axis"],
                                 latency_budget_ms=doc["latency_budget_ms"],
                                 target_fps=doc["target_fps"])
    return _template().render(
        doc=doc, summary=doc["summary"], machine=machine_line(doc), budget=budget_line(doc),
        jobs=[(job_cells(r), _report_link(r, out_dir)) for r in doc["rows"]],
        job_header=JOB_HEADER, node_header=NODE_HEADER, sections=sections,
        unfinished=unfinished(doc), pick_text=pick_text)


def write_sweep_report(rows: list[dict], out_dir: Path, *, latency_budget_ms: float | None = None,
                       target_fps: float | None = None, title: str = "sweep") -> dict:
    """Write sweep.json, sweep.md and sweep.html into ``out_dir`` (atomically; temp files of a
    killed earlier write are swept first); returns the sweep.json document. ``rows`` is not
    changed. When sweep.html cannot be rendered, the other two are still written, a warning is
    printed and no older sweep.html is left behind."""
    for name, limit in (("latency_budget_ms", latency_budget_ms), ("target_fps", target_fps)):
        if limit is not None and not limit > 0:
            raise ValueError(f"{name} must be a positive number, not {limit!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sweep_temp(out_dir)
    doc = build_sweep(rows, latency_budget_ms=latency_budget_ms, target_fps=target_fps,
                      title=title)
    atomic_write_bytes(out_dir / SWEEP_JSON,
                       (json.dumps(doc, indent=2, ensure_ascii=False, default=str) + "\n").encode())
    atomic_write_bytes(out_dir / SWEEP_MD, render_markdown(doc).encode())
    try:
        html = render_html(doc, out_dir)
    except Exception as exc:  # noqa: BLE001 - sweep.json and sweep.md are already written
        print(f"warning: {SWEEP_HTML} not written ({type(exc).__name__}: {exc}); {SWEEP_JSON} "
              f"and {SWEEP_MD} are complete", file=sys.stderr)
        (out_dir / SWEEP_HTML).unlink(missing_ok=True)
        return doc
    atomic_write_bytes(out_dir / SWEEP_HTML, html.encode())
    return doc
