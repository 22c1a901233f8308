"""trace: capture the reference model as a torch.export program and check it reproduces eager."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.artifact import Artifact
from pipeline.context import RunContext
from pipeline.graph import OutputFile, Stage, StageOutput
from pipeline.program import export_program, load_program, save_program
from pipeline.reference import Reference
from pipeline.stages.load import materialize
from pipeline.verify import check_node
from targets.torch_ref import TorchRunner


class TraceStage(Stage):
    stage = "trace"
    version = 1
    tools = ("torch",)
    inputs = ("weights", "reference")
    outputs = ("program",)

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx

    def config(self) -> dict[str, Any]:
        return {"model": self.ctx.model_identity, **self.ctx.measure_config("fp32")}

    def run(self, inputs: dict[str, Artifact], workdir: Path) -> StageOutput:
        c = self.ctx.config
        program, dynamic = export_program(materialize(self.ctx, inputs["weights"]), c.resolution)
        path = workdir / "program.pt2"
        save_program(program, path)
        reloaded = load_program(path).module()
        record = check_node(TorchRunner(reloaded, c.threads, "torch-export"),
                            Reference.load(inputs["reference"].path), self.ctx.tolerance("fp32"),
                            c.bench).to_record()
        record["info"] = {"dynamic_batch": dynamic, "ops": _op_histogram(program)}
        return StageOutput({"program": OutputFile(path, "pt2", {"dynamic_batch": dynamic})}, record)


def _op_histogram(program) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in program.graph.nodes:
        if node.op == "call_function":
            name = getattr(node.target, "__name__", str(node.target))
            counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))
