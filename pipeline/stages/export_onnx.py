"""export_onnx: the fused program to one self-contained, simplified, reproducible ONNX file.

Exporter: ``torch.onnx.export(..., dynamo=True)`` fed the fused ExportedProgram. The TorchScript
exporter is deprecated since torch 2.9 and re-traces the eager module, which would bypass the
trace and fuse stages whose outputs we have already verified; the dynamo exporter translates that
very program, keeps the dynamic batch dimension from torch.export, and its onnxscript optimiser
plus onnxsim leave a graph of Conv/Clip/Add/GlobalAveragePool/Gemm only (op counts are recorded).

Reproducibility: the exporter stores source locations and stack traces in ``metadata_props`` and
``doc_string`` fields; they are stripped so that two checkouts at different paths produce the same
bytes.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import onnx

from pipeline.artifact import Artifact
from pipeline.context import RunContext
from pipeline.artifact import sha256_file
from pipeline.graph import OutputFile, Stage, StageOutput
from pipeline.localise.layer_map import build_layer_map
from pipeline.onnx_graph import name_batch_dim, op_counts, strip_metadata
from pipeline.program import load_program, no_stack_traces, save_program
from pipeline.reference import Reference
from pipeline.verify import check_node
from targets.base import file_runner

log = logging.getLogger(__name__)

INPUT_NAME = "input"
OUTPUT_NAME = "output"


#: what export_to_onnx writes for localisation (pipeline.localise) into its ``localisation``
#: folder: the layer map, and the program as the exporter translated it (decomposed), whose
#: nodes the layer map names
LAYER_MAP_FILE, EXPORTER_PROGRAM_FILE = "layer_map.json", "exporter_program.pt2"


def export_to_onnx(program_path: Path, out_path: Path, opset: int,
                   localisation: Path | None = None) -> dict[str, Any]:
    """Export, simplify, strip and check; returns facts about the graph for the record.
    With ``localisation`` (a folder), the run's layer map is written there from the exporter's
    name scopes (which stripping removes from the model itself), beside the decomposed program
    the exporter translated (so that localising never decomposes again: seconds per run)."""
    import onnxsim
    import torch

    # The exporter logs, at warning level, that torchvision's ops are not registered: noise here.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    program = load_program(program_path)
    with no_stack_traces():   # strip_metadata drops them from the model anyway
        onnx_program = torch.onnx.export(program, (), dynamo=True, opset_version=opset,
                                         input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                         external_data=False, optimize=True, verbose=False)
    exported = onnx_program.model_proto
    exported_ops = op_counts(exported)
    simplified, ok = onnxsim.simplify(exported)
    if not ok:
        raise RuntimeError("onnxsim could not validate the simplified model")
    model = strip_metadata(simplified)
    name_batch_dim(model)
    onnx.checker.check_model(model, full_check=True)
    out_path.write_bytes(model.SerializeToString(deterministic=True))
    facts: dict[str, Any] = {}
    if localisation is not None:
        layers = build_layer_map(exported, model)
        layers.save(localisation / LAYER_MAP_FILE)
        save_program(onnx_program.exported_program, localisation / EXPORTER_PROGRAM_FILE)
        facts["layer_map"] = {"sha256": sha256_file(localisation / LAYER_MAP_FILE),
                              "program_sha256": sha256_file(localisation / EXPORTER_PROGRAM_FILE),
                              "layers": len(layers.layers), "unjoined": len(layers.unjoined)}
    return {**facts, "exporter": f"torch.onnx dynamo (torch {torch.__version__})", "opset": opset,
            "ops_exported": exported_ops, "ops": op_counts(model),
            "nodes": len(model.graph.node), "simplifier": f"onnxsim {onnxsim.__version__}"}


class ExportOnnxStage(Stage):
    stage = "export_onnx"
    version = 2   # 2: the layer map and the exporter's program (pipeline.localise) too
    tools = ("torch", "onnx", "onnxscript", "onnxsim", "onnxruntime")
    inputs = ("fused_program", "reference")
    outputs = ("onnx", "layer_map", "exporter_program")
    unpublished = ("exporter_program",)      # kept in the cache for localisation only
    target = "onnx"

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx

    def config(self) -> dict[str, Any]:
        return {"opset": self.ctx.config.opset, **self.ctx.measure_config("fp32")}

    def run(self, inputs: dict[str, Artifact], workdir: Path) -> StageOutput:
        c = self.ctx.config
        path = workdir / "model.onnx"
        info = export_to_onnx(inputs["fused_program"].path, path, c.opset, workdir)
        record = check_node(file_runner(path, c.threads), Reference.load(inputs["reference"].path),
                            self.ctx.tolerance("fp32"), c.bench).to_record()
        record["info"] = info
        return StageOutput({"onnx": OutputFile(path, "onnx", {"opset": c.opset}),
                            "layer_map": OutputFile(workdir / LAYER_MAP_FILE, "layer_map"),
                            "exporter_program": OutputFile(workdir / EXPORTER_PROGRAM_FILE,
                                                           "pt2")}, record)
