"""The ONNX backend node tests through the product's ONNX -> TFLite path (the child's side).

``pipeline.conformance`` selects the cases and freezes their weight inputs into initializers;
this module, run in an isolated child by :func:`run_cases`, converts each case with the very
function the TFLite stage uses (:func:`targets.tflite.convert.convert` at fp32), runs the .tflite
on LiteRT with the suite's own inputs (fed channels-last where onnx2tf made the input so),
reads each output in the axis order that gives the suite's shape, and compares with the suite's
expected outputs at the suite's own tolerances (``np.testing.assert_allclose``, as
``onnx.backend.test.runner.Runner.assert_similar_outputs`` does, dtype included).

Every result is appended to a JSON-lines progress file as soon as it is known, and a case is
announced there before it starts, so the parent can tell which case crashed or hung the child
and resume after it.
"""
from __future__ import annotations

import itertools
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from targets.tflite.convert import ConversionError, convert

#: onnx2tf's layout change for a rank: channels move last (NCW -> NWC, NCHW -> NHWC, ...)
CHANNELS_LAST = {3: (0, 2, 1), 4: (0, 2, 3, 1), 5: (0, 2, 3, 4, 1)}


def _inverse(perm: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argsort(perm))


def to_tflite_layout(value: np.ndarray, shape: list[int]) -> np.ndarray | None:
    """``value`` (ONNX layout) arranged as onnx2tf's TFLite input of ``shape`` holds it: as is
    when the shapes agree, channels-last (onnx2tf's choice for ranks 3-5) when that is what
    agrees, None when neither does. A shape both fit (2x2x2) is fed as is: measured on the
    suite, that matches onnx2tf more often (Concat 3-D: 2 of 6 pass, 0 of 6 the other way)."""
    if list(value.shape) == list(shape):
        return value
    perm = CHANNELS_LAST.get(value.ndim)
    if perm and list(value.transpose(perm).shape) == list(shape):
        return value.transpose(perm)
    return None


def from_tflite_layout(value: np.ndarray, expected_shape: tuple[int, ...]
                       ) -> list[tuple[tuple[int, ...], np.ndarray]]:
    """Every reading of a TFLite output as the ONNX tensor of ``expected_shape``: each axis
    order that gives that shape, as is first, then channels-first again, then the rest.

    onnx2tf carries its channels-last choice through the graph (an Unsqueeze of an NWC input
    is (1, N, W, C)) and records no layout in the file, so, like onnx2tf's own output check
    (``onnx_tf_tensor_validation``), a tensor is judged in the axis order that matches; the
    order found is recorded with the result, so a pass says in which layout it holds."""
    if value.ndim > 6:
        return []
    first = [tuple(range(value.ndim))]
    if value.ndim in CHANNELS_LAST:
        first.append(_inverse(CHANNELS_LAST[value.ndim]))
    orders = first + [p for p in itertools.permutations(range(value.ndim)) if p not in first]
    return [(p, value.transpose(p)) for p in orders
            if tuple(value.transpose(p).shape) == tuple(expected_shape)]


def compare(expected: np.ndarray, readings: list[tuple[tuple[int, ...], np.ndarray]],
            rtol: float, atol: float) -> tuple[bool, str, float | None]:
    """(passed, reason, max abs error) at the suite's tolerances, dtype and shape included;
    the readings (:func:`from_tflite_layout`) are tried in order, and a pass in any axis order
    but the ONNX one says which order it took."""
    if not readings:
        return False, "output shape differs from the suite's", None
    least: float | None = None        # the smallest error over the readings
    for label, got in readings:
        if got.dtype != expected.dtype:
            return False, f"output dtype {got.dtype}, the suite expects {expected.dtype}", None
        if got.dtype.kind in "iub":
            error = float(np.max(np.abs(got.astype(np.int64) - expected.astype(np.int64)),
                                 initial=0))
        else:
            diff = np.abs(got.astype(np.float64) - expected.astype(np.float64))
            error = float(np.nanmax(diff, initial=0.0)) if diff.size else 0.0
        try:
            np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol)
            note = "" if label == tuple(range(got.ndim)) else f", axes {list(label)}"
            return True, f"within rtol {rtol:g}, atol {atol:g}{note}", error
        except AssertionError:
            least = error if least is None else min(least, error)
    return False, f"values differ: max abs error {least:.3g} (rtol {rtol:g}, atol {atol:g})", least


def _sample_file(inputs: list[np.ndarray], work: Path) -> Path:
    """onnx2tf's sample images: the case's own input when it is a 3-channel image (onnx2tf
    reads the file only then), else a placeholder it never reads."""
    first = inputs[0] if inputs else np.zeros((1, 3, 8, 8), np.float32)
    if first.ndim == 4 and first.shape[1] == 3 and first.dtype.kind == "f":
        sample = first.transpose(0, 2, 3, 1).astype(np.float32)
    else:
        sample = np.zeros((1, 8, 8, 3), np.float32)
    path = work / "sample.npy"
    np.save(path, sample)
    return path


def run_case(case: dict[str, Any], work: Path) -> dict[str, Any]:
    """Convert one case and compare it; a dict for the progress file."""
    from ai_edge_litert.interpreter import Interpreter

    inputs = [np.load(p) for p in case["inputs"]]
    expected = [np.load(p) for p in case["outputs"]]
    out = work / "model.tflite"
    try:
        facts = convert(case["model"], str(out), "fp32", "NHWC", str(_sample_file(inputs, work)))
    except ConversionError as exc:
        return {"status": "fail", "stage": "convert", "reason": str(exc)}
    # the interpreter itself, not LiteRTRunner: that feeds float NCHW image batches only, and a
    # case's inputs are any rank and dtype
    interpreter = Interpreter(model_path=str(out), num_threads=1)
    interpreter.allocate_tensors()
    details = interpreter.get_input_details()
    if len(details) != len(inputs):
        return {"status": "fail", "stage": "inputs",
                "reason": f"the .tflite takes {len(details)} inputs, the case feeds "
                          f"{len(inputs)}", "ops": facts["ops"]}
    for detail, value in zip(details, inputs):
        arranged = to_tflite_layout(value, list(detail["shape"]))
        if arranged is None:
            return {"status": "fail", "stage": "inputs", "ops": facts["ops"],
                    "reason": f"input '{detail['name']}' has shape {list(detail['shape'])}, "
                              f"the case feeds {list(value.shape)}"}
        interpreter.set_tensor(detail["index"],
                               np.ascontiguousarray(arranged.astype(detail["dtype"])))
    interpreter.invoke()
    outputs = interpreter.get_output_details()
    if len(outputs) != len(expected):
        return {"status": "fail", "stage": "outputs", "ops": facts["ops"],
                "reason": f"the .tflite gives {len(outputs)} outputs, the suite expects "
                          f"{len(expected)}"}
    errors: list[float | None] = []
    notes: list[str] = []
    for detail, want in zip(_in_onnx_order(outputs, case["output_names"]), expected):
        got = np.array(interpreter.get_tensor(detail["index"]))
        ok, reason, error = compare(want, from_tflite_layout(got, want.shape),
                                    case["rtol"], case["atol"])
        errors.append(error)
        if not ok:
            return {"status": "fail", "stage": "compare", "ops": facts["ops"],
                    "reason": f"output '{detail['name']}': {reason}", "max_abs_error": error}
        notes.append(reason)
    return {"status": "pass", "reason": "; ".join(sorted(set(notes))), "ops": facts["ops"],
            "max_abs_error": max((e for e in errors if e is not None), default=0.0)}


def _in_onnx_order(details: list[dict[str, Any]], names: list[str]) -> list[dict[str, Any]]:
    """The TFLite outputs in the ONNX graph's output order (they carry the ONNX names after
    the product's renaming; by position where a name did not carry over)."""
    by_name = {d["name"]: d for d in details}
    if all(n in by_name for n in names):
        return [by_name[n] for n in names]
    return list(details)


def run_cases(cases: list[dict[str, Any]], progress: str) -> int:
    """Run ``cases`` in order, appending ``{"name", "event": "start"}`` before and the result
    after each to ``progress``; returns how many ran."""
    with open(progress, "a", encoding="utf-8") as log:
        for case in cases:
            log.write(json.dumps({"name": case["name"], "event": "start"}) + "\n")
            log.flush()
            with tempfile.TemporaryDirectory(prefix="mobile-export-conformance-") as tmp:
                try:
                    result = run_case(case, Path(tmp))
                except Exception as exc:  # one case's runtime error is that case's failure
                    detail = (str(exc).strip().splitlines() or [""])[0][:300]
                    result = {"status": "fail", "stage": "run",
                              "reason": f"{type(exc).__name__}: {detail}"}
            log.write(json.dumps({"name": case["name"], "event": "result", **result}) + "\n")
            log.flush()
    return len(cases)
