"""How every ``mobile-export`` command ends: one red line and its exit code for a known error."""
from __future__ import annotations

import logging
import warnings
from typing import Callable

import typer
from rich.console import Console
from rich.markup import escape

from pipeline.errors import EXIT_BAD_INPUT, MobileExportError

console = Console(stderr=True)


def guard(debug: bool, body: Callable[[], int]) -> None:
    """Run a command body; a known error becomes one red line and its exit code."""
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not debug:
        quiet_third_party()
    try:
        code = body()
    except MobileExportError as exc:
        if debug:
            console.print_exception()
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    except OSError as exc:   # a full disk or a folder that became unwritable mid-run
        if debug:
            console.print_exception()
        where = f" {exc.filename}" if exc.filename else ""
        console.print(f"[bold red]error:[/] cannot write{escape(where)}: "
                      f"{escape(exc.strerror or str(exc))}; free space or pass --out / "
                      "--artifacts-dir a folder on another disk", highlight=False,
                      soft_wrap=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    raise typer.Exit(code)


def quiet_third_party() -> None:
    """Silence library chatter that says nothing about the user's model (e.g. the ONNX exporter
    noting that torchvision's ops are not registered, or pytree deprecations)."""
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="torch")
    for name in ("torch.onnx", "torch._export", "torch.export", "onnxscript"):
        logging.getLogger(name).setLevel(logging.ERROR)
