"""ONNX export: a clean graph, stripped metadata, identical bytes from two checkout paths."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import onnx
import pytest

from pipeline.onnx_graph import name_batch_dim, op_counts, strip_metadata

REPO = Path(__file__).resolve().parents[3]

EXPORT_SCRIPT = textwrap.dedent("""
    import sys
    from pathlib import Path
    import torch
    from pipeline.artifact import sha256_file
    from pipeline.models.registry import ModelSpec, build
    from pipeline.program import export_program, save_program
    from pipeline.stages.export_onnx import export_to_onnx

    torch.manual_seed(0)
    model = build(ModelSpec("mobilenet_v3_small", 0.35, 64, 10))
    program, _ = export_program(model, 64)
    work = Path(sys.argv[1])
    save_program(program, work / "p.pt2")
    export_to_onnx(work / "p.pt2", work / "model.onnx", 18)
    print(sha256_file(work / "model.onnx"))
""")


def _checkout(root: Path) -> Path:
    """A copy of the source tree at another path, as a second clone would be."""
    for package in ("pipeline", "targets"):
        shutil.copytree(REPO / package, root / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    return root


def test_same_bytes_from_two_checkout_paths(tmp_path: Path) -> None:
    digests, models = [], []
    for name in ("first-checkout", "elsewhere/second"):
        checkout = _checkout(tmp_path / name)
        env = {**os.environ, "PYTHONPATH": str(checkout)}
        proc = subprocess.run([sys.executable, "-c", EXPORT_SCRIPT, str(checkout)], cwd=checkout,
                              env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        digests.append(proc.stdout.strip().splitlines()[-1])
        models.append((checkout / "model.onnx").read_bytes())
    assert digests[0] == digests[1]
    for raw in models:
        assert b"first-checkout" not in raw and b"elsewhere" not in raw
        assert str(REPO).encode() not in raw


def test_exported_graph_is_clean(tmp_path: Path) -> None:
    """Hard-swish/SE model: no BatchNorm, no Transpose, one input named with a 'batch' dim."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", EXPORT_SCRIPT, str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    model = onnx.load(tmp_path / "model.onnx")
    ops = op_counts(model)
    assert "BatchNormalization" not in ops and "Transpose" not in ops
    assert ops["Conv"] > 10 and "HardSwish" in ops
    (graph_input,) = model.graph.input
    assert graph_input.name == "input"
    assert graph_input.type.tensor_type.shape.dim[0].dim_param == "batch"
    assert not model.metadata_props and not any(n.doc_string for n in model.graph.node)
    assert not any(n.metadata_props for n in model.graph.node)


def test_strip_metadata_removes_paths_and_names_batch() -> None:
    node = onnx.helper.make_node("Relu", ["x"], ["y"], doc_string="File /home/me/model.py:3")
    onnx.helper.set_metadata_props(node, {"pkg.torch.onnx.stack_trace": "/home/me/model.py"})
    graph = onnx.helper.make_graph(
        [node], "g", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["s7", 3])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["s7", 3])])
    model = onnx.helper.make_model(graph, doc_string="exported from /home/me")
    onnx.helper.set_metadata_props(model, {"source": "/home/me"})
    strip_metadata(model)
    name_batch_dim(model)
    raw = model.SerializeToString()
    assert b"/home/me" not in raw
    assert model.graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"
