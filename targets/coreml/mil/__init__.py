"""A reference evaluator for Core ML ML Programs (MIL), on PyTorch CPU kernels.

Core ML's runtime exists only on Apple platforms. To check a converted ``.mlpackage`` on Linux,
this module reads the program back from the saved package (the protobuf spec and the MIL blob
weight file, without importing coremltools) and executes it op by op:

* one plain function per MIL op, registered with :func:`mil_op` (a duplicate registration is an
  error), in the manner of coremltools' ``torch_op_registry``;
* ``fp16`` emulation: every value whose declared type is ``fp16`` is rounded to fp16 after the
  op that produces it (ops compute in fp32 on rounded inputs);
* compressed weights (``constexpr_affine_dequantize`` from iOS16, ``constexpr_blockwise_shift_scale``
  from iOS18) are dequantized once at load; activation ``quantize``/``dequantize`` (iOS17) are
  executed (round half to even, clip to the integer type's range);
* an op this module does not implement is reported by :attr:`MilEvaluator.unsupported_ops`;
  callers must turn that into an ``unverified`` verdict naming the op, never a pass.

It is a *reference* for what the program means, not the Core ML runtime: kernels, fusions,
accumulation precision and compute-unit placement differ on a device.
"""
from __future__ import annotations

from targets.coreml.mil import ops_elementwise, ops_nn, ops_tensor  # noqa: F401  (register ops)
from targets.coreml.mil.evaluator import (DTYPE_STRINGS, DTYPES, INT_RANGE, LABEL, OPS,
                                          MilEvaluator, MilOp, OpDef, UnsupportedMilError,
                                          conform, mil_op)

__all__ = ["DTYPE_STRINGS", "DTYPES", "INT_RANGE", "LABEL", "OPS", "MilEvaluator", "MilOp",
           "OpDef", "UnsupportedMilError", "conform", "mil_op"]
