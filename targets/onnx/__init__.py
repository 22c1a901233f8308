"""ONNX target: the trunk's fp32 ONNX export and its int8 QDQ model, on ONNX Runtime (CPU)."""
from __future__ import annotations

from pathlib import Path

from targets.base import Runner, Target, register
from targets.onnx.runner import OrtRunner


@register
class OnnxTarget(Target):
    """fp32 ONNX from the fused program and its int8 QDQ quantization, checked and timed on
    ONNX Runtime."""

    name = "onnx"
    platform = "onnx"
    precisions = ("fp32", "int8")
    suffixes = (".onnx",)

    def unavailable_reason(self) -> str | None:
        try:
            import onnxruntime  # noqa: F401
        except ImportError as exc:
            return f"onnxruntime is not importable ({exc}); run `make setup`"
        return None

    def stages(self, ctx, precisions):
        from pipeline.stages.export_onnx import ExportOnnxStage
        from targets.onnx.quantize import QuantizeOnnxStage

        # an ONNX model given as input is the fp32 ONNX: it is not exported again
        stages = [ExportOnnxStage(ctx)] if "fp32" in precisions and not ctx.source.is_onnx \
            else []
        if "int8" in precisions:
            stages.append(QuantizeOnnxStage(ctx))
        return stages

    def runner(self, path: Path, threads: int) -> Runner:
        return OrtRunner(path, threads)

    def tensor_names(self, path, layers, info):
        from pipeline.onnx_guard import check_onnx_file

        model = check_onnx_file(Path(path))
        return self.names_in([name for node in model.graph.node for name in node.output], layers)
