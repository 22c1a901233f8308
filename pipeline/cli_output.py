"""What the CLI prints after a run: the node table, and one line per node that needs a word."""
from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table


def print_nodes(report: dict[str, Any], out: Console) -> None:
    """The report's nodes as a table, verdicts coloured."""
    from pipeline.report.markdown import HEADER, node_row

    table = Table(title=f"{report['model']['label']}  →  exit code {report['exit_code']}")
    for column in HEADER:
        table.add_column(column)
    for node in report["nodes"]:
        row = node_row(node)
        verdict = row[2]
        row[2] = {"pass": "[green]pass[/]", "fail": "[red]fail[/]"}.get(verdict,
                                                                         f"[yellow]{verdict}[/]")
        table.add_row(*row)
    out.print(table)


def print_problems(report: dict[str, Any], console: Console) -> None:
    """Why each failed node failed, each unavailable target once, each missed latency budget."""
    said: set[tuple[str, str]] = set()
    for node in report["nodes"]:
        if node["status"] == "failed":
            console.print(f"[red]{node['name']}[/]: {escape(str(node['error']))}",
                          highlight=False)
        elif node["parity"]["verdict"] == "fail":   # ran, and its check failed: say why
            console.print(f"[red]{node['name']} failed its check[/]: "
                          f"{escape(str(node['parity'].get('reason')))}", highlight=False,
                          soft_wrap=True)
        elif node["status"] == "unavailable" and (node["target"], node["error"]) not in said:
            said.add((node["target"], node["error"]))   # one line per target
            console.print(f"[red]{node['target']} unavailable[/]: "
                          f"{escape(str(node['error']))}", highlight=False)
        if (budget := node.get("latency_budget") or {}).get("verdict") == "fail":
            console.print(f"[red]{node['name']} missed the latency budget[/]: "
                          f"{escape(budget['reason'])}", highlight=False)
