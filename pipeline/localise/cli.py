"""The ``mobile-export localise`` command (registered on the CLI's app by pipeline.cli)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from pipeline.cli_guard import console, guard

#: rows of the short table: the layers that added the most error
TABLE_ROWS = 5


def _number(value: Any, spec: str) -> str:
    return format(value, spec) if isinstance(value, (int, float)) else "n/a"


def print_localisation(record: dict[str, Any]) -> None:
    """The first divergent layer, then the layers that added the most error."""
    from rich.table import Table

    first = record.get("first_divergent")
    where = f"{record.get('node') or 'artifact'} ({record['precision']}, {record['runtime']})"
    if first is None:
        console.print(f"{where}: no layer diverges: {record['compared']} layers within the "
                      f"layer tolerance {record['limit']}", highlight=False, soft_wrap=True)
    else:
        fused = f" (fused with {', '.join(first['fused_with'])})" if first["fused_with"] else ""
        console.print(f"{where}: first divergent layer [bold]{first['torch_module']}[/]{fused}: "
                      f"ONNX {first['onnx_node']} -> {first['onnx_tensor']}, target tensor "
                      f"{first['target_tensor']}; max error "
                      f"{_number(first['error']['max_rel'], '.3g')} of the range, cosine "
                      f"{_number(first['error']['cosine'], '.5f')} (limit {first['limit']})",
                      highlight=False, soft_wrap=True)
    if record.get("transient"):
        console.print("over the tolerance but absorbed by the layers after them (transient): "
                      + ", ".join(e["torch_module"] for e in record["transient"]),
                      highlight=False, soft_wrap=True)
    table = Table("torch module", "ONNX tensor", "max err / range", "cosine", "error added")
    for row in record["top"][:TABLE_ROWS]:
        table.add_row(row["torch_module"], row["onnx_tensor"],
                      _number(row["error"]["max_rel"], ".3g"),
                      _number(row["error"]["cosine"], ".5f"),
                      _number(row["error"]["added"], ".3g"))
    console.print(table)
    console.print(f"{record['compared']} layers compared on {record['samples']} inputs, "
                  f"{len(record['not_compared'])} not compared (see --json)", highlight=False)


def localise(artifact: Path = typer.Argument(..., help="An artifact (.onnx, .tflite, "
                                             ".mlpackage, .engine) of the run or made from it."),
             run_dir: Path = typer.Option(..., "--run", help="The run's report folder."),
             json_out: Optional[Path] = typer.Option(None, "--json",
                                                     help="Also write the record here (JSON)."),
             node: Optional[str] = typer.Option(
                 None, "--node", help="The run's node whose precision and names to use "
                 "(default: the node whose artifact this is, by digest)."),
             threads: int = typer.Option(1), debug: bool = typer.Option(False)) -> None:
    """Name the first layer of the model at which ARTIFACT diverges from PyTorch."""
    def body() -> int:
        from pipeline.files import atomic_write_bytes
        from pipeline.localise.command import localise_artifact

        record = localise_artifact(artifact, run_dir, node_name=node, threads=threads)
        print_localisation(record)
        if json_out is not None:
            atomic_write_bytes(json_out, (json.dumps(record, indent=1) + "\n").encode())
        return 0 if record["first_divergent"] is None else 1

    guard(debug, body)
