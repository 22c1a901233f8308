"""Turn a validated config into the stage graph: the trunk plus each requested target's stages."""
from __future__ import annotations

from pipeline.context import RunContext
from pipeline.errors import UserInputError
from pipeline.graph import Graph, Stage
from pipeline.stages.fuse import FuseStage
from pipeline.stages.load import LoadStage
from pipeline.stages.trace import TraceStage
from targets.base import Target, registered_targets


def trunk_stages(ctx: RunContext) -> list[Stage]:
    if ctx.source.is_onnx:   # the chain starts at the ONNX node (pipeline.onnx_input)
        from pipeline.stages.load_onnx import LoadOnnxStage

        return [LoadOnnxStage(ctx)]
    stages: list[Stage] = []
    if ctx.config.finetune_epochs > 0:
        from pipeline.stages.finetune import FinetuneStage

        stages.append(FinetuneStage(ctx))
    if ctx.config.prune:
        from pipeline.stages.prune import PruneStage

        stages.append(PruneStage(ctx))
    return stages + [LoadStage(ctx), TraceStage(ctx), FuseStage(ctx)]


def requested_targets(ctx: RunContext) -> list[Target]:
    """Instances of the requested targets; refuses a target none of whose precisions was asked."""
    registry = registered_targets()
    chosen = []
    if ctx.source.is_onnx and "coreml" in ctx.config.targets:
        raise UserInputError(f"{ctx.config.model}: Core ML cannot start from an ONNX model "
                             "(coremltools >= 6 has no ONNX front end, and no ONNX-to-PyTorch "
                             "importer is installed); drop coreml from --targets, or pass the "
                             "PyTorch model")
    for name in ctx.config.targets:
        target = registry[name]()
        if not set(ctx.config.precisions) & set(target.precisions):
            raise UserInputError(f"target '{name}' builds precisions {list(target.precisions)}; "
                                 f"--precisions asked for {list(ctx.config.precisions)}")
        chosen.append(target)
    return chosen


def build_graph(ctx: RunContext, targets: list[Target]) -> tuple[Graph, dict[str, str]]:
    """The graph, and the targets left out of it with the reason they cannot run here."""
    stages = trunk_stages(ctx)
    unavailable: dict[str, str] = {}
    for target in targets:
        stages.extend(target.checks(ctx, ctx.config.precisions))
        reason = target.unavailable_reason()
        if reason:
            unavailable[target.name] = reason
            continue
        stages.extend(target.stages(ctx, ctx.config.precisions))
    return Graph(with_providers(ctx, stages)), unavailable


def with_providers(ctx: RunContext, stages: list[Stage]) -> list[Stage]:
    """Add the shared stages that requested stages consume but nobody asked for (e.g. the ONNX
    export that the TFLite and TensorRT converters start from, when `onnx` is not a target)."""
    from pipeline.stages.export_onnx import ExportOnnxStage

    providers = {"onnx": ExportOnnxStage}
    produced = {o for s in stages for o in s.outputs}
    for needed in [i for s in stages for i in s.inputs if i not in produced]:
        if needed in providers and needed not in produced:
            stages.append(providers[needed](ctx))
            produced.add(needed)
    return stages


def preflight(ctx: RunContext) -> None:
    """Check the model, its weights and the input resolution before any stage runs."""
    c = ctx.config
    if ctx.source.is_onnx:
        _preflight_onnx(ctx)
    else:
        from pipeline.stages.load import build_reference_model

        ctx.source.check_resolution(build_reference_model(ctx))
    if c.calib is not None:
        from pipeline.data import image_folder

        image_folder(c.calib, limit=1, what="calibration folder")
    if c.eval is not None:
        from pipeline.data import labelled_folder

        classes = labelled_folder(c.eval, what="evaluation folder").classes
        if len(classes) > c.num_classes:
            raise UserInputError(f"--eval {c.eval} has {len(classes)} classes but the model "
                                 f"outputs {c.num_classes}; pass the matching --num-classes")
    if c.dataset == "digits" and c.num_classes != 10:
        raise UserInputError(f"--dataset digits has 10 classes but --num-classes is "
                             f"{c.num_classes}; pass --num-classes 10")
    if c.prune and c.distill and c.dataset is None and c.train_dir is None:
        raise UserInputError("--distill needs training data: pass --dataset digits or set "
                             "train_dir to a labelled folder root/<class>/<image>")
    if c.prune and not ctx.source.is_zoo:
        raise UserInputError("--prune works on zoo models (the pruned architecture is rebuilt "
                             "from the zoo's spec); drop --prune for this model")
    if c.finetune_epochs > 0 and c.dataset is None and c.train_dir is None:
        raise UserInputError("--finetune-epochs needs training data: pass --dataset digits or "
                             "set train_dir to a labelled folder root/<class>/<image>")


def _preflight_onnx(ctx: RunContext) -> None:
    """What an ONNX model cannot do: the stages that train or prune a PyTorch model."""
    c = ctx.config
    for flag, value in (("--finetune-epochs", c.finetune_epochs), ("--prune", c.prune),
                        ("--weights", c.weights)):
        if value:
            raise UserInputError(f"{flag} needs a PyTorch model, and {c.model} is an ONNX "
                                 f"model; drop {flag} (or pass the PyTorch model)")
