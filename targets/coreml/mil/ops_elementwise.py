"""MIL ops: elementwise arithmetic and activations."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from targets.coreml.mil.evaluator import DTYPE_STRINGS, conform, mil_op
from targets.coreml.mil.helpers import _float, _float_tensor, _int


# -- ops: elementwise ------------------------------------------------------------------------


@mil_op("add")
def add(x, y):
    return x + y


@mil_op("sub")
def sub(x, y):
    return x - y


@mil_op("mul")
def mul(x, y):
    return x * y


@mil_op("real_div")
def real_div(x, y):
    return _float_tensor(x) / _float_tensor(y)


@mil_op("maximum")
def maximum(x, y):
    return torch.maximum(x, y)


@mil_op("minimum")
def minimum(x, y):
    return torch.minimum(x, y)


@mil_op("pow")
def pow_(x, y):
    return torch.pow(x, y)


@mil_op("relu")
def relu(x):
    return torch.relu(x)


@mil_op("relu6")
def relu6(x):
    return torch.clamp(x, 0.0, 6.0)


@mil_op("clip")
def clip(x, alpha, beta):
    return torch.clamp(x, _float(alpha), _float(beta))


@mil_op("sigmoid")
def sigmoid(x):
    return torch.sigmoid(x)


@mil_op("sigmoid_hard")
def sigmoid_hard(x, alpha=0.2, beta=0.5):
    return torch.clamp(_float(alpha) * x + _float(beta), 0.0, 1.0)


@mil_op("thresholded_relu")
def thresholded_relu(x, alpha=1.0):
    """``x`` where ``x >= alpha``, else 0 (coremltools' hardswish starts with alpha=-3)."""
    return torch.where(x >= _float(alpha), x, torch.zeros_like(x))


@mil_op("silu")
def silu(x):
    return F.silu(x)


@mil_op("tanh")
def tanh(x):
    return torch.tanh(x)


@mil_op("leaky_relu")
def leaky_relu(x, alpha=0.01):
    return F.leaky_relu(x, _float(alpha))


@mil_op("gelu")
def gelu(x, mode="EXACT"):
    if mode == "EXACT":
        return F.gelu(x)
    if mode == "TANH_APPROXIMATION":
        return F.gelu(x, approximate="tanh")
    if mode == "SIGMOID_APPROXIMATION":
        return x * torch.sigmoid(1.702 * x)
    raise ValueError(f"unknown gelu mode {mode!r}")


@mil_op("softmax")
def softmax(x, axis=-1):
    return torch.softmax(x, dim=_int(axis))


@mil_op("exp")
def exp(x):
    return torch.exp(x)


@mil_op("sqrt")
def sqrt(x):
    return torch.sqrt(x)


@mil_op("rsqrt")
def rsqrt(x, epsilon=1e-12):
    return torch.rsqrt(x + _float(epsilon))


@mil_op("inverse")
def inverse(x, epsilon=1e-4):
    return 1.0 / (x + _float(epsilon))


@mil_op("identity")
def identity(x):
    return x.clone() if isinstance(x, torch.Tensor) else x


@mil_op("cast")
def cast(x, dtype):
    target = DTYPE_STRINGS.get(dtype)
    if target is None:
        raise ValueError(f"cast to unknown dtype {dtype!r}")
    return conform(x, target)
