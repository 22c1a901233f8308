"""onnx2tf's own per-op comparison (``-cotof``), run in the converter's child after an fp32
parity failure: the first ONNX op whose output the TensorFlow graph does not reproduce."""
from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

from targets.tflite.convert import (ConversionError, batch_one_copy, onnx2tf_kwargs, onnx_io,
                                    private_dir, run_onnx2tf)


def compare_per_op(onnx_path: str, layout: str, sample_path: str,
                   atol: float = 1e-4) -> dict[str, Any]:
    """onnx2tf's own per-operation comparison (``-cotof``): every ONNX op's output against the
    TensorFlow graph's, on the run's real photos. Returns the first op that diverges (graph
    order)."""
    with private_dir() as work:
        onnx_copy = batch_one_copy(Path(onnx_path), work / "model.onnx")
        return _compare_per_op(onnx_copy, layout, Path(sample_path), work, atol)


def _compare_per_op(onnx_path: Path, layout: str, sample_path: Path, workdir: Path,
                    atol: float) -> dict[str, Any]:
    inputs, _ = onnx_io(onnx_path)
    kwargs = onnx2tf_kwargs(onnx_path, workdir / "out", layout, inputs)
    kwargs.update(disable_model_save=False, check_onnx_tf_outputs_elementwise_close_full=True,
                  check_onnx_tf_outputs_elementwise_close_atol=atol,
                  check_onnx_tf_outputs_elementwise_close_rtol=0.0)
    module = sys.modules.get("onnx2tf.onnx2tf")
    if module is None:
        import onnx2tf  # noqa: F401

        module = sys.modules["onnx2tf.onnx2tf"]
    captured: list[dict] = []
    original = module.onnx_tf_tensor_validation

    def capture(**kw: Any) -> dict:
        results = original(**kw)
        captured.append(results)
        return results

    module.onnx_tf_tensor_validation = capture
    try:
        run_onnx2tf(onnx_path, workdir / "cwd", sample_path, kwargs)
    finally:
        module.onnx_tf_tensor_validation = original
    if not captured:
        raise ConversionError("onnx2tf's per-op comparison did not run (onnxruntime could not "
                              "infer the model's intermediate outputs)")
    producers = _producers(onnx_path)
    checked = unmatched = 0
    first = None
    for (onnx_name, _tf_name), (_tensor, flag, max_abs, shapes) in captured[0].items():
        name = re.sub("^wa/", "/", onnx_name)
        if flag == 2:
            continue
        checked += 1
        if flag == 0 or flag is False:
            unmatched += 1
            if first is None:
                node, op = producers.get(name, (None, None))
                first = {"tensor": name, "node": node, "op": op, "max_abs_error": float(max_abs)}
    return {"atol": atol, "checked": checked, "unmatched": unmatched, "first_diverging": first}


def _producers(onnx_path: Path) -> dict[str, tuple[str, str]]:
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    return {out: (node.name, node.op_type) for node in model.graph.node for out in node.output}
