"""load: build the model, load the user's weights safely, and record the fp32 reference outputs."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from pipeline.artifact import Artifact
from pipeline.checkpoint import apply_state_dict, read_state_dict
from pipeline.context import RunContext
from pipeline.data import build_parity_inputs
from pipeline.graph import OutputFile, Stage, StageOutput
from pipeline.models.counting import count_macs, count_params, fp32_bytes
from pipeline.parity import run_outputs
from pipeline.reference import Reference
from pipeline.verify import check_node
from targets.torch_ref import TorchRunner


def build_reference_model(ctx: RunContext) -> nn.Module:
    """The user's model with the user's weights (or seeded initial weights), in eval mode."""
    torch.manual_seed(ctx.config.parity.seed)
    model = ctx.source.build()
    weights = ctx.config.weights
    if weights is not None:
        apply_state_dict(model, read_state_dict(Path(weights)), Path(weights))
    return model.eval()


def save_weights(model: nn.Module, path: Path) -> None:
    """Every state_dict entry as its own contiguous tensor (safetensors refuses shared storage)."""
    save_file({k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}, str(path))


def materialize(ctx: RunContext, weights: Artifact) -> nn.Module:
    """Rebuild the reference model from the stored weights of the load stage."""
    model = ctx.source.build()
    model.load_state_dict(load_file(str(weights.path)), strict=True)
    return model.eval()


class LoadStage(Stage):
    stage = "load"
    version = 1
    tools = ("torch", "safetensors", "scikit-image", "pillow")
    outputs = ("weights", "reference")

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx

    def config(self) -> dict[str, Any]:
        c = self.ctx.config
        return {"model": self.ctx.model_identity, "parity": c.parity.model_dump(),
                "calib": self.ctx.calib_identity, **self.ctx.measure_config("fp32")}

    def run(self, inputs: dict[str, Artifact], workdir: Path) -> StageOutput:
        ctx, c = self.ctx, self.ctx.config
        model = build_reference_model(ctx)
        ctx.source.check_resolution(model)
        weights_path = workdir / "weights.safetensors"
        save_weights(model, weights_path)
        parity_inputs = build_parity_inputs(ctx.source.preprocessing, c.calib,
                                            n_random=c.parity.n_random, seed=c.parity.seed,
                                            max_calib=c.parity.max_calib)
        with TorchRunner(model, c.threads) as runner:
            reference = Reference(parity_inputs, run_outputs(runner, parity_inputs))
        reference_path = workdir / "reference.safetensors"
        reference.save(reference_path)
        # The node's own check: the stored weights, rebuilt into a fresh model, reproduce the
        # reference bit for bit (catches non-determinism, train-mode dropout, unsaved buffers).
        stored = Artifact("weights", "", weights_path)
        record = check_node(TorchRunner(materialize(ctx, stored), c.threads, "torch-eager"),
                            reference, ctx.tolerance("fp32"), c.bench)
        record["model"] = {"label": ctx.source.label, "params": count_params(model),
                           "macs": count_macs(model, c.resolution), "fp32_bytes": fp32_bytes(model),
                           "inputs": parity_inputs.counts(),
                           "preprocessing": asdict(ctx.source.preprocessing)}
        return StageOutput({"weights": OutputFile(weights_path, "safetensors"),
                            "reference": OutputFile(reference_path, "reference")}, record)
