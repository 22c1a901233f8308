"""load: build the model, load the user's weights safely, and record the fp32 reference outputs."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from pipeline.artifact import Artifact
from pipeline.checkpoint import apply_state_dict, read_state_dict
from pipeline.context import RunContext
from pipeline.data import ParityInputs, build_parity_inputs
from pipeline.graph import OutputFile, Stage, StageOutput
from pipeline.models.counting import count_macs, count_params, fp32_bytes
from pipeline.parity import run_outputs
from pipeline.evaluation import evaluation_set
from pipeline.reference import EvalSet, Reference
from pipeline.verify import EVAL_BATCH, check_node
from targets.torch_ref import TorchRunner


def is_pruned_file(path: Path) -> bool:
    from safetensors import safe_open

    from pipeline.pruned_format import PRUNED_FORMAT

    with safe_open(str(path), framework="pt") as handle:
        return (handle.metadata() or {}).get("format") == PRUNED_FORMAT


def restore_model(ctx: RunContext, path: Path) -> nn.Module:
    """A model from weights this pipeline stored: a plain state_dict, or a pruned model's."""
    if is_pruned_file(path):
        from pipeline.pruned_format import load_pruned

        return load_pruned(path, ctx.source.spec).eval()
    model = ctx.source.build()
    model.load_state_dict(load_file(str(path)), strict=True)
    return model.eval()


def build_reference_model(ctx: RunContext, trained: Artifact | None = None) -> nn.Module:
    """The user's model with the user's weights (or seeded initial weights), in eval mode;
    with ``trained``, the weights the finetune or prune stage produced instead."""
    torch.manual_seed(ctx.config.parity.seed)
    if trained is not None:
        return restore_model(ctx, trained.path)
    model = ctx.source.build()
    weights = ctx.config.weights
    if weights is not None:
        apply_state_dict(model, read_state_dict(Path(weights)), Path(weights))
    return model.eval()


def save_weights(model: nn.Module, path: Path, pruned_spec=None) -> None:
    """Every state_dict entry as its own contiguous tensor (safetensors refuses shared storage);
    a pruned model also stores its channel configuration (``pruned_spec`` given)."""
    if pruned_spec is not None:
        from pipeline.pruned_format import save_pruned

        save_pruned(model, path, pruned_spec)
        return
    save_file({k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}, str(path))


def materialize(ctx: RunContext, weights: Artifact) -> nn.Module:
    """Rebuild the reference model from the stored weights of the load stage."""
    return restore_model(ctx, weights.path)


def reference_evaluation(ctx: RunContext, runner: TorchRunner) -> EvalSet | None:
    """The labelled evaluation images with the reference's logits on them (None without labels)."""
    labelled = evaluation_set(ctx)
    if labelled is None:
        return None
    data, source = labelled
    batch = data.batch(ctx.source.preprocessing)
    eval_inputs = EvalSet(batch, data.labels, np.zeros((0,)), source).as_parity_inputs()
    logits = next(iter(run_outputs(runner, eval_inputs, batch_size=EVAL_BATCH).values()))
    return EvalSet(batch, data.labels, logits, source)


EVAL_PARITY_SAMPLES = 32


def with_eval_samples(inputs: ParityInputs, evaluation: EvalSet | None) -> ParityInputs:
    """Add up to 32 labelled evaluation images (kind ``eval``, evenly spread) to the parity set,
    so that a model trained on other images than photos is also compared on its own kind."""
    if evaluation is None:
        return inputs
    n = len(evaluation.labels)
    picks = np.unique(np.linspace(0, n - 1, min(n, EVAL_PARITY_SAMPLES)).round().astype(int))
    return ParityInputs(inputs.names + [f"eval:{i}" for i in picks],
                        inputs.kinds + ["eval"] * len(picks),
                        np.concatenate([inputs.batch, evaluation.inputs[picks]]))


class LoadStage(Stage):
    stage = "load"
    #: 2: the evaluation logits are computed 32 images per call (pipeline.verify.EVAL_BATCH)
    version = 2
    tools = ("torch", "safetensors", "scikit-image", "pillow")
    outputs = ("weights", "reference")

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.inputs = ("pruned_weights",) if ctx.config.prune else \
            ("trained_weights",) if ctx.config.finetune_epochs > 0 else ()

    def config(self) -> dict[str, Any]:
        c = self.ctx.config
        return {"model": self.ctx.model_identity, "parity": c.parity.model_dump(),
                "calib": self.ctx.calib_identity, "eval": self.ctx.eval_identity,
                **self.ctx.measure_config("fp32")}

    def run(self, inputs: dict[str, Artifact], workdir: Path) -> StageOutput:
        ctx, c = self.ctx, self.ctx.config
        source = inputs.get("pruned_weights") or inputs.get("trained_weights")
        model = build_reference_model(ctx, source)
        ctx.source.check_resolution(model)
        weights_path = workdir / "weights.safetensors"
        save_weights(model, weights_path, ctx.source.spec if c.prune else None)
        parity_inputs = build_parity_inputs(ctx.source.preprocessing, c.calib,
                                            n_random=c.parity.n_random, seed=c.parity.seed,
                                            max_calib=c.parity.max_calib)
        with TorchRunner(model, c.threads) as runner:
            evaluation = reference_evaluation(ctx, runner)
            parity_inputs = with_eval_samples(parity_inputs, evaluation)
            reference = Reference(parity_inputs, run_outputs(runner, parity_inputs), evaluation)
        reference_path = workdir / "reference.safetensors"
        reference.save(reference_path)
        # The node's own check: the stored weights, rebuilt into a fresh model, reproduce the
        # reference bit for bit (catches non-determinism, train-mode dropout, unsaved buffers).
        stored = Artifact("weights", "", weights_path)
        checks = check_node(TorchRunner(materialize(ctx, stored), c.threads, "torch-eager"),
                            reference, ctx.tolerance("fp32"), c.bench, ctx.accuracy_drop("fp32"))
        record = checks.to_record()
        record["model"] = {"label": ctx.source.label, "params": count_params(model),
                           "macs": count_macs(model, c.resolution), "fp32_bytes": fp32_bytes(model),
                           "inputs": parity_inputs.counts(),
                           "preprocessing": asdict(ctx.source.preprocessing)}
        if ctx.source.nas_identity is not None:   # mobilenet_nas: which network of the space
            record["model"]["nas"] = ctx.source.nas_identity
        return StageOutput({"weights": OutputFile(weights_path, "safetensors"),
                            "reference": OutputFile(reference_path, "reference")}, record)
