"""The conformance cases expected to fail through ONNX -> TFLite, each with its reason.

Like the exclusion lists ONNX backends keep for ``onnx.backend.test`` (onnxruntime's
``onnx_backend_test_series_filters.jsonc``, onnx-tf's ``backend_test.exclude``), by regular
expression over the case name. A case listed here that passes is reported as a pass (and the
summary counts it as unexpected), so the list cannot hide a fix.
"""
from __future__ import annotations

import re

EXPECTED_FAILS: tuple[tuple[str, str], ...] = (
    (r"_(e4m3fn|e5m2|float4e2m1|int4|uint4)(_|$)",
     "a float8 / 4-bit tensor type: TFLite has no such tensor type (onnx2tf and LiteRT cannot "
     "hold it)"),
    (r"^test_div_u?int(8|16)$|^test_div_uint(16|32|64)$",
     "integer Div: onnx2tf computes it in float, so the quotient's rounding (int8, int16) or "
     "the output dtype (unsigned types come out float) differs from ONNX's integer division"),
    (r"^test_quantizelinear(_axis|_blocked_.*|_int16|_uint16)?$",
     "onnx2tf 1.29.24 gives a float32 output for a QuantizeLinear whose ONNX output is an "
     "integer type (the product's int8 TFLite files are quantized by TFLite's own converter)"),
    (r"^test_batchnorm_.*_training_mode$",
     "training-mode BatchNormalization (running-mean/var outputs): a deployed model is in "
     "inference mode"),
    (r"^test_resize_tf_crop_and_resize",
     "tf_crop_and_resize with an ROI: no TFLite builtin (CROP_AND_RESIZE is a TF op), and its "
     "extrapolated border is not a matrix product (targets/tflite/rewrite_resize.py)"),
    (r"^test_maxpool_with_argmax_2d_precomputed_strides$|^test_maxpool_3d_dilations_use_ref_impl_large$",
     "MaxPool with argmax storage order / 3-D dilation: onnx2tf 1.29.24 has no lowering"),
    (r"^test_constant$",
     "a graph with no input (its output is a constant): nothing to run on a device"),
    (r"^test_reshape_allowzero_reordered$",
     "a zero-size tensor: TFLite cannot allocate an empty input"),
)


def expected_failure(name: str) -> str | None:
    """The reason ``name`` is expected to fail, or None."""
    for pattern, reason in EXPECTED_FAILS:
        if re.search(pattern, name):
            return reason
    return None
