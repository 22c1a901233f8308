"""Saving, loading and exporting torch.export programs with a dynamic batch dimension."""
from __future__ import annotations

import io
import logging
from pathlib import Path

import torch
from torch import nn
from torch.export import Dim, ExportedProgram

log = logging.getLogger(__name__)

MAX_BATCH = 4096


def export_program(module: nn.Module, resolution: int) -> tuple[ExportedProgram, bool]:
    """torch.export the module with a dynamic batch dim; fall back to a static batch of 1.

    The example batch is 2 because torch.export specialises size-1 dimensions.
    Returns the program and whether its batch dimension is dynamic.
    """
    example = torch.zeros(2, 3, resolution, resolution)
    try:
        batch = Dim("batch", min=1, max=MAX_BATCH)
        return torch.export.export(module, (example,), dynamic_shapes=({0: batch},)), True
    except Exception as exc:  # the model pins its batch size (e.g. a reshape to a constant)
        log.info("dynamic-batch export failed (%s); exporting with a static batch of 1", exc)
        return torch.export.export(module, (example[:1],)), False


def save_program(program: ExportedProgram, path: Path) -> None:
    torch.export.save(program, str(path))


def load_program(path: Path) -> ExportedProgram:
    """Load a saved program; read as bytes because cache objects have no ``.pt2`` suffix."""
    return torch.export.load(io.BytesIO(Path(path).read_bytes()))
