"""MIL ops: convolution, linear algebra, normalisation, pooling, reductions."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from targets.coreml.mil.evaluator import mil_op
from targets.coreml.mil.helpers import _bool, _float, _float_tensor, _int, _ints, _spatial_pads, _torch_pad


# -- ops: linear algebra and convolution -----------------------------------------------------

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


@mil_op("conv")
def conv(x, weight, bias=None, strides=None, pad_type="valid", pad=None, dilations=None,
         groups=1):
    n = x.dim() - 2
    pad_type = pad_type if isinstance(pad_type, str) else str(pad_type)
    strides = _ints(strides) if strides is not None else [1] * n
    dilations = _ints(dilations) if dilations is not None else [1] * n
    kernel = list(weight.shape[2:])
    pads = _spatial_pads(pad_type, pad, list(x.shape[2:]), kernel, strides, dilations)
    x = F.pad(x, _torch_pad(pads)) if any(p for pair in pads for p in pair) else x
    return _CONV[n](x, weight, bias, stride=strides, dilation=dilations, groups=_int(groups))


@mil_op("linear")
def linear(x, weight, bias=None):
    return F.linear(x, weight, bias)


@mil_op("matmul")
def matmul(x, y, transpose_x=False, transpose_y=False):
    if _bool(transpose_x):
        x = x.transpose(-1, -2)
    if _bool(transpose_y):
        y = y.transpose(-1, -2)
    return torch.matmul(x, y)


# -- ops: normalisation, pooling, reductions ---------------------------------------------------


@mil_op("batch_norm")
def batch_norm(x, mean, variance, gamma=None, beta=None, epsilon=1e-5):
    return F.batch_norm(x, mean, variance, gamma, beta, training=False, eps=_float(epsilon))


def _pool(x, kernel_sizes, strides, pad_type, pad, ceil_mode, fill):
    n = x.dim() - 2
    kernel = _ints(kernel_sizes)
    strides = _ints(strides) if strides is not None else [1] * n
    pads = _spatial_pads(str(pad_type), pad, list(x.shape[2:]), kernel, strides, [1] * n)
    if any(p for pair in pads for p in pair):
        x = F.pad(x, _torch_pad(pads), value=fill)
    return x, kernel, strides, pads, _bool(ceil_mode)


@mil_op("avg_pool")
def avg_pool(x, kernel_sizes, strides=None, pad_type="valid", pad=None,
             exclude_padding_from_average=False, ceil_mode=False):
    n = x.dim() - 2
    padded, kernel, strides, pads, ceil = _pool(x, kernel_sizes, strides, pad_type, pad,
                                                ceil_mode, 0.0)
    pool = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[n]
    summed = pool(padded, kernel, strides, ceil_mode=ceil, count_include_pad=True)
    if not _bool(exclude_padding_from_average) or not any(p for pair in pads for p in pair):
        return summed
    ones = F.pad(torch.ones_like(x[:1, :1]), _torch_pad(pads), value=0.0)
    return summed / pool(ones, kernel, strides, ceil_mode=ceil, count_include_pad=True)


@mil_op("max_pool")
def max_pool(x, kernel_sizes, strides=None, pad_type="valid", pad=None, ceil_mode=False):
    n = x.dim() - 2
    padded, kernel, strides, _, ceil = _pool(x, kernel_sizes, strides, pad_type, pad, ceil_mode,
                                             float("-inf"))
    pool = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[n]
    return pool(padded, kernel, strides, ceil_mode=ceil)


def _axes(x, axes):
    return list(range(x.dim())) if axes is None else [a % x.dim() for a in _ints(axes)]


@mil_op("reduce_mean")
def reduce_mean(x, axes=None, keep_dims=False):
    return torch.mean(_float_tensor(x), dim=_axes(x, axes), keepdim=_bool(keep_dims))


@mil_op("reduce_sum")
def reduce_sum(x, axes=None, keep_dims=False):
    return torch.sum(x, dim=_axes(x, axes), keepdim=_bool(keep_dims))


@mil_op("reduce_max")
def reduce_max(x, axes=None, keep_dims=False):
    return torch.amax(x, dim=_axes(x, axes), keepdim=_bool(keep_dims))


@mil_op("reduce_min")
def reduce_min(x, axes=None, keep_dims=False):
    return torch.amin(x, dim=_axes(x, axes), keepdim=_bool(keep_dims))
