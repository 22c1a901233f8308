"""MIL ops: shapes, the classifier, activation quantization."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from targets.coreml.mil.evaluator import DTYPE_STRINGS, DTYPES, INT_RANGE, mil_op
from targets.coreml.mil.helpers import _along, _bool, _float, _int, _ints, _torch_pad


# -- ops: shapes -----------------------------------------------------------------------------


@mil_op("reshape")
def reshape(x, shape):
    target = _ints(shape)
    if len(target) == x.dim():
        target = [x.shape[i] if s == 0 else s for i, s in enumerate(target)]
    return x.reshape(target)


@mil_op("flatten2d")
def flatten2d(x, axis=1):
    axis = _int(axis) % max(x.dim(), 1)
    return x.reshape(int(np.prod(x.shape[:axis])), -1)


@mil_op("transpose")
def transpose(x, perm):
    return x.permute(_ints(perm))


@mil_op("concat", variadic=("values",))
def concat(values, axis, interleave=False):
    if _bool(interleave):
        raise ValueError("concat with interleave=True is not implemented")
    return torch.cat(values, dim=_int(axis))


@mil_op("squeeze")
def squeeze(x, axes=None):
    if axes is None:
        return x.squeeze()
    dims = sorted((a % x.dim() for a in _ints(axes)), reverse=True)
    for d in dims:
        x = x.squeeze(d)
    return x


@mil_op("expand_dims")
def expand_dims(x, axes):
    axes = _ints(axes)
    rank = x.dim() + len(axes)
    for a in sorted(a % rank for a in axes):
        x = x.unsqueeze(a)
    return x


@mil_op("pad")
def pad(x, pad, mode="constant", constant_val=0.0):
    values = _ints(pad)
    pairs = [(values[2 * i], values[2 * i + 1]) for i in range(len(values) // 2)]
    torch_mode = {"constant": "constant", "reflect": "reflect", "replicate": "replicate"}[mode]
    if torch_mode == "constant":
        return F.pad(x, _torch_pad(pairs), value=_float(constant_val))
    return F.pad(x, _torch_pad(pairs), mode=torch_mode)


# -- ops: classifier ------------------------------------------------------------------------


@mil_op("classify")
def classify(probabilities, classes):
    """A Core ML classifier's outputs: the top label, and the scores (a label -> score
    dictionary in Core ML; here the score tensor in label order)."""
    labels = classes if isinstance(classes, list) else _ints(classes)
    scores = probabilities.reshape(1, -1).to(torch.float64)
    return labels[int(scores.argmax())], scores


# -- ops: quantization -----------------------------------------------------------------------


def _quantize(x, scale, zero_point, axis, dtype):
    rank = x.dim()
    axis = None if axis is None else _int(axis)
    scaled = torch.round(x / _along(scale.float(), axis, rank))
    if zero_point is not None:
        scaled = scaled + _along(zero_point.float(), axis, rank)
    low, high = INT_RANGE[dtype]
    return torch.clamp(scaled, low, high).to(DTYPES[dtype][1])


def _dequantize(q, scale, zero_point, axis):
    rank = q.dim()
    axis = None if axis is None else _int(axis)
    values = q.float()
    if zero_point is not None:
        values = values - _along(zero_point.float(), axis, rank)
    return values * _along(scale.float(), axis, rank)


@mil_op("quantize")
def quantize(input, scale, output_dtype, zero_point=None, axis=None):
    dtype = DTYPE_STRINGS.get(output_dtype)
    if dtype not in INT_RANGE:
        raise ValueError(f"quantize to {output_dtype!r} is not implemented")
    return _quantize(input, scale, zero_point, axis, dtype)


@mil_op("dequantize")
def dequantize(input, scale, zero_point=None, axis=None):
    return _dequantize(input, scale, zero_point, axis)


@mil_op("constexpr_affine_dequantize")
def constexpr_affine_dequantize(quantized_data, zero_point, scale, axis):
    return _dequantize(quantized_data, scale, zero_point, axis)


def _blocks(param: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    for dim, (size, n) in enumerate(zip(shape, param.shape)):
        if size % n:
            raise ValueError(f"dim {dim}: {size} is not a multiple of {n} blocks")
        if n != size:
            param = param.repeat_interleave(size // n, dim=dim)
    return param


@mil_op("constexpr_blockwise_shift_scale")
def constexpr_blockwise_shift_scale(data, scale, offset=None):
    values = data.float()
    if offset is not None:
        values = values - _blocks(offset.float(), data.shape)
    return values * _blocks(scale.float(), data.shape)
