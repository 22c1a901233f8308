"""Reference values per layer: every FX node's output of the fused program, on real inputs.

Why the program's nodes and not forward hooks on ``named_modules``: a hook sees a module's
output only, so the functional ops in a ``forward`` (a residual ``+``, squeeze-excite's ``*``,
``flatten``) would have no reference of their own, and a BatchNorm folded into its conv would
need its output matched by position. The fused program is the graph every converter received
(checked against the eager model at the fuse node); each of its nodes carries the module path
it ran in (``nn_module_stack``) and is exactly what the ONNX exporter names in its scopes, so
the join is by identity.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def exporter_graph(program: Any) -> Any:
    """The program as the ONNX exporter translates it: decomposed with its own registry.

    The exporter names its nodes' scopes after *this* graph (a decomposition renames nodes:
    ``adaptive_avg_pool2d`` becomes ``mean``, an in-place ``hardtanh_`` becomes ``hardtanh``),
    so the reference values must come from it. This calls the exporter's own preparation step
    (a private function of the pinned torch; re-implementing it would drift from what it does).
    """
    from torch.onnx._internal.exporter import _core, _registration

    return _core._prepare_exported_program_for_export(
        program, registry=_registration.ONNXRegistry.from_torchlib())


def capture_values(program_path: Path, batch: np.ndarray,
                   wanted: set[str] | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """(FX node name -> float32 value over ``batch``, the model's output) for the fused program.

    ``wanted`` limits what is kept (the layer map's FX nodes); values are copied when produced,
    so an in-place op later in the graph cannot change them."""
    import torch
    import torch.fx

    from pipeline.program import load_program

    module = exporter_graph(load_program(program_path)).module()
    values: dict[str, list[np.ndarray]] = {}
    outputs: list[np.ndarray] = []

    class Recorder(torch.fx.Interpreter):
        def run_node(self, node: torch.fx.Node) -> Any:
            result = super().run_node(node)
            if (node.op == "call_function" and isinstance(result, torch.Tensor)
                    and result.is_floating_point() and (wanted is None or node.name in wanted)):
                values.setdefault(node.name, []).append(
                    result.detach().to(torch.float32).numpy().copy())
            return result

    with torch.inference_mode():
        for sample in batch:
            out = Recorder(module).run(torch.from_numpy(np.ascontiguousarray(sample[None],
                                                                             np.float32)))
            first = out[0] if isinstance(out, (tuple, list)) else out
            outputs.append(first.detach().numpy().copy())
    return ({name: np.concatenate(parts) for name, parts in values.items()},
            np.concatenate(outputs))
