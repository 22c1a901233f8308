"""report.md: the same facts as report.json, for people."""
from __future__ import annotations

from typing import Any


def fmt(value: Any, spec: str = ".3g") -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


def node_row(node: dict[str, Any]) -> list[str]:
    """name, runtime, verdict, max rel, cosine, top-1, median, p90, cached — shared with the table."""
    parity = node.get("parity") or {}
    latency = node.get("latency") or {}
    top1 = parity.get("top1_agreement")
    return [node["name"], latency.get("runtime") or node["target"], parity.get("verdict", "—"),
            fmt(parity.get("max_rel")), fmt(parity.get("cosine"), ".6f"),
            "—" if top1 is None else f"{100 * top1:.1f} %", fmt(latency.get("median_ms"), ".2f"),
            fmt(latency.get("p90_ms"), ".2f"), "cached" if node.get("cached") else node["status"]]


HEADER = ["node", "runtime", "parity", "max rel err", "centred cosine", "top-1 agree",
          "median ms", "p90 ms", "status"]


def node_notes(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per node with something to say: its warnings, and the layers an int8 node kept in float
    (mixed precision) with their cost. ``[{"name", "items": [text, ...]}]``."""
    notes = []
    for node in nodes:
        mixed = (node.get("info") or {}).get("mixed_precision")
        items = [f"warning: {w}" for w in node.get("warnings") or []]
        budget = node.get("latency_budget") or {}
        if budget.get("verdict") == "fail":
            items.append(f"latency budget missed: {budget['reason']} (not published)")
        if mixed and mixed.get("cost"):
            cost = mixed["cost"]
            labels = [(mixed.get("layers") or {}).get(name, {}).get("label", name)
                      for name in mixed["float_layers"]]
            items.append(f"mixed precision: {cost['float_layers']} of {cost['of_layers']} "
                         f"layers in float ({', '.join(labels)}): "
                         f"{100 * cost['params_share']:.2f} % of parameters, "
                         f"{100 * cost['macs_share']:.1f} % of MACs, median "
                         f"{fmt(cost.get('median_ms'), '.2f')} ms vs "
                         f"{fmt(cost.get('int8_median_ms'), '.2f')} ms all-int8")
        record = node.get("localisation")
        # a passing node (localised with --localise all) only when it names a layer
        if record and ((node.get("parity") or {}).get("verdict") == "fail"
                       or record.get("first_divergent") or record.get("error")):
            items.append(localisation_note(record))
        if items:
            notes.append({"name": node["name"], "items": items})
    return notes


def localisation_note(record: dict[str, Any]) -> str:
    """One line: the first divergent layer of a failed node (pipeline.localise)."""
    if record.get("error"):
        return f"not localised: {record['error']}"
    first = record.get("first_divergent")
    if first is None:
        absorbed = [str(e.get("torch_module")) for e in record.get("transient") or []]
        return (f"no single layer exceeds the {record.get('precision')} layer tolerance "
                f"{record.get('limit')} and carries it to the output "
                f"({record.get('compared')} layers compared): the error builds up across "
                "layers" + (f"; over it but absorbed by the next layers: {', '.join(absorbed)}"
                            if absorbed else ""))
    fused = f", fused with {', '.join(first['fused_with'])}" if first.get("fused_with") else ""
    error = first.get("error") or {}
    return (f"first divergent layer: **{first['torch_module']}**{fused} (ONNX "
            f"{first['onnx_node']} -> {first['onnx_tensor']}, target tensor "
            f"{first['target_tensor']}): max error {fmt(error.get('max_rel'))} of the range, "
            f"cosine {fmt(error.get('cosine'), '.5f')}, limit {first.get('limit')}")


def notes_section(nodes: list[dict[str, Any]]) -> list[str]:
    """report.md's section of :func:`node_notes`."""
    lines: list[str] = []
    for note in node_notes(nodes):
        lines += [f"- **{note['name']}**", *(f"  - {item}" for item in note["items"])]
    return ["", "## Warnings and mixed precision", "", *lines] if lines else []


def problem_nodes(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Nodes whose checks did not pass or could not run."""
    return [n for n in report["nodes"] if n["parity"]["verdict"] != "pass"]


def runs_section(report: dict[str, Any]) -> list[str]:
    """When nodes of earlier runs were merged in (pipeline.report.merge): which run made which."""
    runs = report.get("runs") or []
    if len(runs) < 2:
        return []
    lines = ["", "## Runs merged into this report", ""]
    for run in runs:
        names = [n["name"] for n in report["nodes"]
                 if (n.get("run") or {}).get("finished") == run["finished"]
                 and n["run"].get("config_sha256") == run["config_sha256"]]
        lines.append(f"- {run['finished']} (exit code {run['exit_code']}, config "
                     f"`{run['config_sha256'][:12]}`): {', '.join(names) or '—'}")
    return lines


def render_markdown(report: dict[str, Any]) -> str:
    model, machine, run = report["model"], report["machine"], report["run"]
    lines = [f"# mobile-export report: {model['label']}", ""]
    lines += [f"- model: `{model['ref']}` width {model['width']}, {model['resolution']} px, "
              f"{model['num_classes']} classes; weights: {model.get('weights') or 'built-in init'}",
              f"- params: {fmt(model.get('params'))}, MACs: {fmt(model.get('macs'))}",
              f"- parity inputs: {model.get('inputs')}",
              f"- machine: {machine.get('cpu_model', '?')}, {machine.get('logical_cores', '?')} cores, "
              f"{machine.get('platform', '?')}",
              f"- run: {run['seconds']} s, finished {run['finished']}, exit code {report['exit_code']}",
              "", "## Nodes", "",
              "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(node_row(n)) + " |" for n in report["nodes"]]
    problems = problem_nodes(report)
    if problems:
        lines += ["", "## Checks that did not pass or could not run", ""]
        for node in problems:
            lines.append(f"- **{node['name']}** — {node['parity']['verdict']}: "
                         f"{node['parity'].get('reason') or node.get('error')}")
            lines += [f"  - {f}" for f in node["parity"].get("failures", [])]
    lines += notes_section(report["nodes"])
    lines += runs_section(report)
    lines += ["", "## Artifacts", ""]
    for node in report["nodes"]:
        art = node.get("artifact")
        if art:
            lines.append(f"- {node['name']}: `{art['path']}` ({art['bytes']} bytes, "
                         f"sha256 `{art['sha256']}`)")
    return "\n".join(lines) + "\n"
