"""Reference values per layer: every FX node's output of the program the ONNX exporter
translated (the fused program, decomposed by the exporter; export_onnx keeps it), on real inputs.

Why the program's nodes and not forward hooks on ``named_modules``: a hook sees a module's
output only, so the functional ops in a ``forward`` (a residual ``+``, squeeze-excite's ``*``,
``flatten``) would have no reference of their own, and a BatchNorm folded into its conv would
need its output matched by position. The fused program is the graph every converter received
(checked against the eager model at the fuse node), as the exporter decomposed it: each of its
nodes carries the module path it ran in and is exactly what the exporter names in its scopes
(a decomposition renames nodes: ``adaptive_avg_pool2d`` becomes ``mean``), so the join is by
identity.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def capture_values(program_path: Path, batch: np.ndarray,
                   wanted: set[str] | None = None) -> dict[str, np.ndarray]:
    """FX node name -> float32 value over ``batch``, for the program.

    ``wanted`` limits what is kept (the layer map's FX nodes); values are copied when produced,
    so an in-place op later in the graph cannot change them."""
    import torch
    import torch.fx

    from pipeline.program import load_program

    module = load_program(program_path).module()
    values: dict[str, np.ndarray] = {}
    index = 0

    class Recorder(torch.fx.Interpreter):
        def run_node(self, node: torch.fx.Node) -> Any:
            result = super().run_node(node)
            if (node.op == "call_function" and isinstance(result, torch.Tensor)
                    and result.is_floating_point() and (wanted is None or node.name in wanted)):
                value = result.detach().to(torch.float32).numpy()
                if index == 0:      # one array per node for the whole batch, filled in place
                    values[node.name] = np.empty((len(batch), *value.shape[1:]), np.float32)
                values[node.name][index] = value[0]
            return result

    with torch.inference_mode():
        for index, sample in enumerate(batch):
            Recorder(module).run(torch.from_numpy(np.ascontiguousarray(sample[None],
                                                                       np.float32)))
    return values
