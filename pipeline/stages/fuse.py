"""fuse: fold inference-mode BatchNorm into the preceding convolution, on the exported graph.

Working on the torch.export graph (not on module names) folds BatchNorm wherever it follows a
convolution, in the zoo's models and in any user model alike. The arithmetic is torch's own
``fuse_conv_bn_weights``; this module only finds the pattern and rewires the graph.

Activations are deliberately left as separate ops: every runtime downstream fuses them itself
(ONNX Runtime's FusedConv, XNNPACK in LiteRT, Core ML, TensorRT), and a fused activation would need
a vendor-specific op that the other converters cannot read.
"""
from __future__ import annotations

import operator
from pathlib import Path
from typing import Any

import torch
from torch import fx
from torch.nn.utils.fusion import fuse_conv_bn_weights

from pipeline.artifact import Artifact
from pipeline.context import RunContext
from pipeline.graph import OutputFile, Stage, StageOutput
from pipeline.program import export_program, load_program, save_program
from pipeline.reference import Reference
from pipeline.verify import check_node
from targets.torch_ref import TorchRunner

_CONV = {torch.ops.aten.conv2d.default, torch.ops.aten.convolution.default}
_BN = torch.ops.aten.batch_norm.default
_BN_NO_TRAINING = torch.ops.aten._native_batch_norm_legit_no_training.default
_ACTIVATIONS = {torch.ops.aten.relu.default, torch.ops.aten.hardtanh.default,
                torch.ops.aten.hardswish.default, torch.ops.aten.clamp.default,
                torch.ops.aten.sigmoid.default, torch.ops.aten.silu.default}

# Relative to the reference's output range: folding changes only float rounding.
FUSE_MAX_REL = 1e-5


def _attr(gm: fx.GraphModule, node: Any) -> torch.Tensor | None:
    """The tensor a ``get_attr`` node reads (None for an absent optional argument)."""
    if node is None:
        return None
    if not isinstance(node, fx.Node) or node.op != "get_attr":
        raise _NotFoldable
    return operator.attrgetter(node.target)(gm)


class _NotFoldable(Exception):
    pass


def _bn_args(node: fx.Node) -> tuple[Any, ...] | None:
    """(input, weight, bias, mean, var, eps) of an inference-mode batch norm node, else None."""
    if node.target is _BN:
        x, w, b, mean, var, training, _momentum, eps = node.args[:8]
        return None if training else (x, w, b, mean, var, eps)
    if node.target is _BN_NO_TRAINING:
        x, w, b, mean, var, _momentum, eps = node.args[:7]
        return (x, w, b, mean, var, eps)
    return None


def fold_batchnorm(gm: fx.GraphModule) -> int:
    """Fold every conv → batch-norm pair in ``gm`` in place; returns how many were folded."""
    folded = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_function":
            continue
        args = _bn_args(node)
        if args is None:
            continue
        conv = args[0]
        if not (isinstance(conv, fx.Node) and conv.target in _CONV and len(conv.users) == 1):
            continue
        if conv.target is torch.ops.aten.convolution.default and conv.args[6]:  # transposed
            continue
        try:
            conv_w, conv_b = _attr(gm, conv.args[1]), _attr(gm, conv.args[2] if len(conv.args) > 2
                                                            else None)
            bn_w, bn_b, mean, var = (_attr(gm, a) for a in args[1:5])
        except _NotFoldable:
            continue
        weight, bias = fuse_conv_bn_weights(conv_w, conv_b, mean, var, args[5], bn_w, bn_b)
        index = folded
        gm.register_parameter(f"_fused_{index}_weight", weight)
        gm.register_parameter(f"_fused_{index}_bias", bias)
        with gm.graph.inserting_before(conv):
            w_node = gm.graph.get_attr(f"_fused_{index}_weight")
            b_node = gm.graph.get_attr(f"_fused_{index}_bias")
        new_args = list(conv.args)
        while len(new_args) < 3:
            new_args.append(None)
        new_args[1], new_args[2] = w_node, b_node
        conv.args = tuple(new_args)
        users = list(node.users)
        if node.target is _BN_NO_TRAINING:  # users are getitem(bn, 0)
            for user in users:
                user.replace_all_uses_with(conv)
                gm.graph.erase_node(user)
        else:
            node.replace_all_uses_with(conv)
        gm.graph.erase_node(node)
        folded += 1
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return folded


def _count(gm: fx.GraphModule) -> dict[str, int]:
    nodes = [n for n in gm.graph.nodes if n.op == "call_function"]
    return {
        "conv": sum(n.target in _CONV for n in nodes),
        "batch_norm": sum(n.target in (_BN, _BN_NO_TRAINING) for n in nodes),
        "conv_activation_pairs": sum(n.target in _ACTIVATIONS and isinstance(n.args[0], fx.Node)
                                     and n.args[0].target in _CONV for n in nodes),
    }


class FuseStage(Stage):
    stage = "fuse"
    version = 1
    tools = ("torch",)
    inputs = ("program", "reference")
    outputs = ("fused_program",)

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx

    def tolerance(self):
        return self.ctx.tolerance("fp32").model_copy(update={"max_rel": FUSE_MAX_REL})

    def config(self) -> dict[str, Any]:
        return {"model": self.ctx.model_identity, **self.ctx.measure_config("fp32"),
                "tolerance": self.tolerance().cache_identity()}

    def run(self, inputs: dict[str, Artifact], workdir: Path) -> StageOutput:
        c = self.ctx.config
        gm = load_program(inputs["program"].path).module()
        before = _count(gm)
        folded = fold_batchnorm(gm)
        after = _count(gm)
        program, dynamic = export_program(gm, c.resolution)
        path = workdir / "fused.pt2"
        save_program(program, path)
        checks = check_node(TorchRunner(load_program(path).module(), c.threads, "torch-export"),
                            Reference.load(inputs["reference"].path), self.tolerance(), c.bench)
        record = checks.to_record()
        record["info"] = {"batchnorm_folded": folded, "before": before, "after": after,
                          "activations": "left to each runtime's own conv+activation fusion",
                          "dynamic_batch": dynamic}
        return StageOutput({"fused_program": OutputFile(path, "pt2", {"dynamic_batch": dynamic})},
                           record)
