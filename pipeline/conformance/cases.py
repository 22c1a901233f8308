"""Which ONNX backend node tests are the vision-model conformance suite, and their files.

The cases come from ``onnx.backend.test.loader.load_model_tests(kind="node")`` (the suite's own
loader, with its per-case tolerances), shipped inside the pinned onnx package: nothing is
downloaded. A case belongs to the suite when every op *inside its model* is in
:data:`VISION_OPS` (the ops the zoo and common mobile vision models export to), whatever the
case is called; an ``_expanded`` case that spells an op out in other ops qualifies on those.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: the ops a mobile vision network exports to (MobileNet V1-V3, ResNet-style, detection heads'
#: resizes and pads, and the Q/DQ pairs of an int8 graph)
VISION_OPS = frozenset("""
Add AveragePool BatchNormalization Clip Concat Constant Conv ConvTranspose DequantizeLinear Div
Flatten Gemm GlobalAveragePool GlobalMaxPool HardSigmoid HardSwish Identity LeakyRelu MatMul
MaxPool Mul Pad PRelu QuantizeLinear Relu Reshape Resize Sigmoid Softmax Squeeze Sub Tanh
Transpose Unsqueeze
""".split())

#: the cases ``make test`` runs: one or more per op family, small, quick to convert
FAST_CASES = (
    "test_conv_with_strides_padding", "test_averagepool_2d_pads", "test_maxpool_2d_strides",
    "test_relu", "test_clip_default_min", "test_hardswish", "test_concat_3d_axis_1",
    "test_globalaveragepool", "test_concat_2d_axis_1", "test_transpose_all_permutations_1",
    "test_softmax_axis_1", "test_resize_upsample_scales_nearest", "test_flatten_axis1",
    "test_batchnorm_epsilon", "test_convtranspose", "test_unsqueeze_axis_0",
)


@dataclass(frozen=True)
class Case:
    """One node test: its folder, its ops and the suite's tolerances."""

    name: str
    folder: Path
    ops: tuple[str, ...]
    rtol: float
    atol: float
    tensors_only: bool = True     # every graph input and output a tensor (no sequence, optional)

    @property
    def model(self) -> Path:
        return self.folder / "model.onnx"

    @property
    def data(self) -> Path:
        return self.folder / "test_data_set_0"


def node_cases() -> list[Case]:
    """Every node test of the installed onnx, with the ops inside its model, sorted by name."""
    import onnx
    from onnx.backend.test.loader import load_model_tests

    cases = []
    for test in load_model_tests(kind="node"):
        folder = Path(test.model_dir)
        model = onnx.load(str(folder / "model.onnx"), load_external_data=False)
        ops = tuple(sorted({f"{n.domain}::{n.op_type}" if n.domain not in ("", "ai.onnx")
                            else n.op_type for n in model.graph.node}))
        tensors_only = all(v.type.HasField("tensor_type")
                           for v in list(model.graph.input) + list(model.graph.output))
        cases.append(Case(test.name, folder, ops, float(test.rtol), float(test.atol),
                          tensors_only))
    return sorted(cases, key=lambda c: c.name)


def vision_cases(cases: list[Case] | None = None) -> list[Case]:
    """The cases whose ops all lie in :data:`VISION_OPS` and whose inputs and outputs are all
    tensors (none with an empty graph; sequences and optionals are not image models' I/O)."""
    return [c for c in (node_cases() if cases is None else cases)
            if c.ops and set(c.ops) <= VISION_OPS and c.tensors_only]


def family(case: Case) -> str:
    """The op a case is about: its name's op when the model holds it (``test_resize_*`` ->
    Resize), else its first op."""
    by_lower = {op.lower(): op for op in case.ops}
    words = case.name.removeprefix("test_").split("_")
    for count in range(len(words), 0, -1):
        key = "".join(words[:count])
        if key in by_lower:
            return by_lower[key]
    return case.ops[0]
