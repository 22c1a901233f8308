"""Saving, loading and exporting torch.export programs with a dynamic batch dimension."""
from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path
from typing import Iterator

import torch
from torch import nn
from torch.export import Dim, ExportedProgram

log = logging.getLogger(__name__)

MAX_BATCH = 4096


@contextlib.contextmanager
def no_stack_traces() -> Iterator[None]:
    """Trace without recording a Python stack trace on every FX node (``torch.fx.config.
    do_not_emit_stack_traces``). The traces are dropped before a program is saved anyway
    (VOLATILE_META), but collecting them took half of each ``run_decompositions`` of
    MobileNetV2 (9.2 s -> 4.2 s, the same graph), where the dynamic batch dimension makes
    the tracer create some 18,000 transient nodes."""
    import torch.fx.config as fx_config

    previous = fx_config.do_not_emit_stack_traces
    fx_config.do_not_emit_stack_traces = True
    try:
        yield
    finally:
        fx_config.do_not_emit_stack_traces = previous


def export_program(module: nn.Module, resolution: int) -> tuple[ExportedProgram, bool]:
    """torch.export the module with a dynamic batch dim; fall back to a static batch of 1.

    The example batch is 2 because torch.export specialises size-1 dimensions.
    Returns the program and whether its batch dimension is dynamic.
    """
    example = torch.zeros(2, 3, resolution, resolution)
    with no_stack_traces():
        try:
            batch = Dim("batch", min=1, max=MAX_BATCH)
            return torch.export.export(module, (example,), dynamic_shapes=({0: batch},)), True
        except Exception as exc:  # the model pins its batch size (e.g. a reshape to a constant)
            log.info("dynamic-batch export failed (%s); exporting with a static batch of 1", exc)
            return torch.export.export(module, (example[:1],)), False


#: Node metadata that differs between processes or checkouts and says nothing about the program:
#: ``from_node`` records provenance with ``graph_id = id(graph)`` (an object address),
#: ``stack_trace`` the absolute paths of the source files.
VOLATILE_META = ("from_node", "stack_trace")


def save_program(program: ExportedProgram, path: Path) -> None:
    """Save ``program`` with its volatile node metadata dropped: the same program gives the
    same bytes in any process and from any checkout."""
    for node in program.graph.nodes:
        for key in VOLATILE_META:
            node.meta.pop(key, None)
    torch.export.save(program, str(path))


def load_program(path: Path, source: str | None = None) -> ExportedProgram:
    """Load a saved program after :func:`pipeline.pt2_guard.check_pt2` found nothing in it that
    loading could execute. Read once as bytes (cache objects have no ``.pt2`` suffix, and what
    is checked is what is loaded); ``source`` names the file in errors."""
    from pipeline.errors import UserInputError
    from pipeline.pt2_guard import MAX_PT2_BYTES, check_pt2

    path = Path(path)
    name = source or str(path)
    with open(path, "rb") as handle:
        data = handle.read(MAX_PT2_BYTES + 1)
    check_pt2(data, name)
    try:
        return torch.export.load(io.BytesIO(data))
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a damaged archive
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise UserInputError(f"{name} cannot be loaded as a torch.export program "
                             f"({type(exc).__name__}: {first}); pass a file written by "
                             "torch.export.save") from None
