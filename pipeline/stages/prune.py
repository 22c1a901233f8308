"""prune: remove channels (or zero weights), optionally recover by distillation from the unpruned
model, and judge the result against that unpruned model by accuracy and top-1 agreement.

It runs before ``load``: the pruned model is what gets deployed, so it becomes the fp32
reference every later stage is compared with, while this node records what pruning cost.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from pipeline.artifact import Artifact
from pipeline.context import RunContext
from pipeline.data import build_parity_inputs
from pipeline.errors import UserInputError
from pipeline.graph import OutputFile, Stage, StageOutput
from pipeline.parity import Tolerance, run_outputs
from pipeline.pruned_format import save_pruned
from pipeline.pruning import PruneConfig, prune
from pipeline.reference import Reference
from pipeline.verify import check_node
from targets.torch_ref import TorchRunner

#: Pruning changes the function on purpose: judged by agreement with the unpruned model on
#: in-distribution images and by the accuracy gate, never by max error.
PRUNE_TOLERANCE = Tolerance(min_top1=0.9, in_distribution_only=True)


class PruneStage(Stage):
    stage = "prune"
    #: 2: distillation trains with BatchNorm momentum 0.1 (pipeline.recipe; changes V3 only)
    version = 2
    tools = ("torch", "torch-pruning")
    outputs = ("pruned_weights",)

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.inputs = ("trained_weights",) if ctx.config.finetune_epochs > 0 else ()

    def prune_config(self) -> PruneConfig:
        c = self.ctx.config
        return PruneConfig(ratio=c.prune, mode=c.prune_mode, scope=c.prune_scope)

    def tolerance(self) -> Tolerance:
        return self.ctx.config.tolerances.get("prune", PRUNE_TOLERANCE)

    def config(self) -> dict[str, Any]:
        c = self.ctx.config
        return {"model": self.ctx.model_identity, "prune": c.prune, "mode": c.prune_mode,
                "scope": c.prune_scope, "distill_epochs": c.distill_epochs if c.distill else 0,
                "dataset": c.dataset, "eval": self.ctx.eval_identity, "seed": c.parity.seed,
                "parity": c.parity.model_dump(), "calib": self.ctx.calib_identity,
                "tolerance": self.tolerance().cache_identity(),
                "accuracy_drop": self.ctx.accuracy_drop("prune"), **self.ctx.measure_config("fp32")}

    def run(self, inputs: dict[str, Artifact], workdir: Path) -> StageOutput:
        from pipeline.stages.finetune import training_set
        from pipeline.stages.load import build_reference_model, reference_evaluation, \
            with_eval_samples

        ctx, c = self.ctx, self.ctx.config
        if not ctx.source.is_zoo:
            raise UserInputError("--prune works on zoo models (the pruned architecture is rebuilt "
                                 "from the zoo's spec); drop --prune for this model")
        teacher = build_reference_model(ctx, inputs.get("trained_weights"))
        with TorchRunner(teacher, c.threads) as runner:
            evaluation = reference_evaluation(ctx, runner)
            parity_inputs = with_eval_samples(
                build_parity_inputs(ctx.source.preprocessing, c.calib, n_random=c.parity.n_random,
                                    seed=c.parity.seed, max_calib=c.parity.max_calib), evaluation)
            reference = Reference(parity_inputs, run_outputs(runner, parity_inputs), evaluation)
        student = copy.deepcopy(teacher)
        example = torch.from_numpy(parity_inputs.batch[:1].copy())
        summary = prune(student, example, self.prune_config())
        info: dict[str, Any] = {"summary": summary.to_dict()}
        if c.distill:
            from pipeline.distill import finetune_with_distillation

            data = training_set(ctx)
            x = torch.from_numpy(data.batch(ctx.source.preprocessing))
            y = torch.from_numpy(data.labels)
            info["distill_losses"] = finetune_with_distillation(
                student, teacher, (x, y), epochs=c.distill_epochs, seed=c.parity.seed)
        student.eval()
        path = workdir / "pruned.safetensors"
        save_pruned(student, path, ctx.source.spec)
        record = check_node(TorchRunner(student, c.threads), reference, self.tolerance(), c.bench,
                            ctx.accuracy_drop("prune")).to_record()
        record["info"] = info
        record["params"] = {"before": summary.params_before, "after": summary.params_after}
        record["macs"] = {"before": summary.macs_before, "after": summary.macs_after}
        return StageOutput({"pruned_weights": OutputFile(path, "safetensors",
                                                         {"pruned": True})}, record)
