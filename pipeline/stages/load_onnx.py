"""load_onnx: an ONNX model as the run's input (pipeline.onnx_input): one self-contained copy
of it, and the reference (its outputs on ONNX Runtime) that every later node is judged against.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from pipeline.artifact import Artifact
from pipeline.context import RunContext
from pipeline.data import build_parity_inputs
from pipeline.graph import OutputFile, Stage, StageOutput
from pipeline.onnx_graph import op_counts
from pipeline.onnx_input import REFERENCE_LABEL, inspect_onnx, self_contained_copy
from pipeline.parity import run_outputs
from pipeline.reference import Reference
from pipeline.stages.load import reference_evaluation, with_eval_samples
from pipeline.verify import check_node
from targets.base import file_runner


class LoadOnnxStage(Stage):
    """The given ONNX model and its reference outputs (ONNX Runtime, all optimisations)."""

    stage = "load_onnx"
    version = 1
    tools = ("onnx", "onnxruntime", "numpy", "scikit-image", "pillow")
    outputs = ("onnx", "reference")
    target = "reference"        # not a deployment target: nothing is published from here

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx

    def config(self) -> dict[str, Any]:
        c = self.ctx.config
        return {"onnx": self.ctx.model_identity["onnx"], "resolution": c.resolution,
                "num_classes": c.num_classes, "parity": c.parity.model_dump(),
                "preprocessing": asdict(self.ctx.source.preprocessing),
                "calib": self.ctx.calib_identity, "eval": self.ctx.eval_identity,
                **self.ctx.measure_config("fp32")}

    def run(self, inputs: dict[str, Artifact], workdir: Path) -> StageOutput:
        ctx, c = self.ctx, self.ctx.config
        # c.resolution is the model's own size, or the --resolution a dynamic size is fixed at
        facts = inspect_onnx(c.model, c.resolution)
        path, model = self_contained_copy(c.model, workdir / "model.onnx", c.resolution)
        parity_inputs = build_parity_inputs(ctx.source.preprocessing, c.calib,
                                            n_random=c.parity.n_random, seed=c.parity.seed,
                                            max_calib=c.parity.max_calib)
        with file_runner(path, c.threads) as runner:   # ONNX Runtime, by the file's suffix
            evaluation = reference_evaluation(ctx, runner)   # any Runner
            parity_inputs = with_eval_samples(parity_inputs, evaluation)
            reference = Reference(parity_inputs, run_outputs(runner, parity_inputs), evaluation)
        reference_path = workdir / "reference.safetensors"
        reference.save(reference_path)
        # the node's own check: the stored copy reproduces the reference (a new session)
        checks = check_node(file_runner(path, c.threads), reference, ctx.tolerance("fp32"),
                            c.bench, ctx.accuracy_drop("fp32"))
        checks.parity.notes.append(f"reference: {REFERENCE_LABEL}")
        record = checks.to_record()
        record["info"] = {"source": str(c.model), "opset": facts.opset,
                          "ops": op_counts(model), "nodes": len(model.graph.node),
                          "reference": REFERENCE_LABEL}
        record["model"] = {"label": ctx.source.label, "params": facts.params, "macs": None,
                           "fp32_bytes": 4 * facts.params, "inputs": parity_inputs.counts(),
                           "preprocessing": asdict(ctx.source.preprocessing),
                           "reference": REFERENCE_LABEL}
        return StageOutput({"onnx": OutputFile(path, "onnx"),
                            "reference": OutputFile(reference_path, "reference")}, record)

