"""Facts about a .tflite file read from its flatbuffer (no TensorFlow): op counts, I/O tensors,
and what makes a converted graph unfit to ship."""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

CONV_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV", "CONV_3D")


def op_counts(tflite_path: str | Path) -> dict[str, int]:
    """Operator counts of a .tflite graph (every subgraph), read from the flatbuffer itself, so
    delegates do not hide operators and models with custom/Flex ops can still be counted."""
    from ai_edge_litert import schema_py_generated as schema

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    model = schema.Model.GetRootAs(Path(tflite_path).read_bytes(), 0)
    counts: Counter[str] = Counter()
    for s in range(model.SubgraphsLength()):
        graph = model.Subgraphs(s)
        for o in range(graph.OperatorsLength()):
            code = model.OperatorCodes(graph.Operators(o).OpcodeIndex())
            builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            name = names.get(builtin, str(builtin))
            if name == "CUSTOM":
                custom = code.CustomCode()
                name = "CUSTOM:" + (custom.decode() if custom else "?")
            counts[name] += 1
    return dict(sorted(counts.items()))


def graph_problems(ops: dict[str, int]) -> list[str]:
    """What makes a converted graph unfit to ship, one sentence each (empty when it is fine)."""
    problems = []
    convs = sum(ops.get(name, 0) for name in CONV_OPS)
    transposes = ops.get("TRANSPOSE", 0)
    if convs and transposes >= convs:
        problems.append(f"the graph has {transposes} TRANSPOSE ops for {convs} convolutions: "
                        "layout transposes are wrapped around the convs (an NCHW graph was not "
                        "converted to NHWC); it would run far slower than it should")
    foreign = sorted(n for n in ops if n.startswith("CUSTOM:") or n.startswith("Flex"))
    if foreign:
        problems.append(f"the graph needs operators the LiteRT runtime does not ship by default "
                        f"({', '.join(foreign)}): TensorFlow Select (Flex) or custom ops")
    return problems


def io_details(tflite_path: str | Path) -> dict[str, list[dict[str, Any]]]:
    """Name, shape, dtype and quantization (scale/zero-point; None when float) of each I/O
    tensor."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(model_path=str(tflite_path), experimental_op_resolver_type=
                              OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)

    def describe(detail: dict[str, Any]) -> dict[str, Any]:
        scales = np.asarray(detail["quantization_parameters"]["scales"]).ravel().tolist()
        points = np.asarray(detail["quantization_parameters"]["zero_points"]).ravel().tolist()
        quant = {"scale": float(scales[0]), "zero_point": int(points[0])} if scales else None
        return {"name": detail["name"], "shape": [int(d) for d in detail["shape"]],
                "dtype": np.dtype(detail["dtype"]).name, "quantization": quant}

    return {"inputs": [describe(d) for d in interpreter.get_input_details()],
            "outputs": [describe(d) for d in interpreter.get_output_details()]}
