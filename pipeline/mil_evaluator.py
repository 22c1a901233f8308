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

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.errors import MobileExportError
from pipeline.mlpackage import PackageError, PackageLayout, blob_file, load_spec

LABEL = "MIL reference evaluator (not the Core ML runtime)"


class UnsupportedMilError(MobileExportError):
    """The program uses ops (or value types) the evaluator does not implement."""

    def __init__(self, ops: list[str]) -> None:
        super().__init__(f"the {LABEL} does not implement MIL op(s) {', '.join(ops)}")
        self.ops = ops


# -- the op registry -------------------------------------------------------------------------


@dataclass(frozen=True)
class OpDef:
    name: str
    fn: Callable[..., Any]
    variadic: frozenset[str] = frozenset()


OPS: dict[str, OpDef] = {}


def mil_op(*names: str, variadic: Iterable[str] = ()) -> Callable[[Callable], Callable]:
    """Register ``fn`` as the implementation of the MIL op type(s) ``names``.

    ``variadic`` names the parameters that take a list of values (e.g. ``concat``'s ``values``).
    """
    def register(fn: Callable) -> Callable:
        for name in names or (fn.__name__,):
            if name in OPS:
                raise ValueError(f"MIL op '{name}' is registered twice "
                                 f"({OPS[name].fn.__name__} and {fn.__name__})")
            OPS[name] = OpDef(name, fn, frozenset(variadic))
        return fn
    return register


# -- values ----------------------------------------------------------------------------------

#: MIL DataType name -> (numpy dtype of stored data, torch dtype used while evaluating)
_DTYPES: dict[str, tuple[Any, torch.dtype]] = {
    "FLOAT16": (np.float16, torch.float32),
    "FLOAT32": (np.float32, torch.float32),
    "FLOAT64": (np.float64, torch.float64),
    "INT8": (np.int8, torch.int8),
    "UINT8": (np.uint8, torch.uint8),
    "INT16": (np.int16, torch.int16),
    "UINT16": (np.uint16, torch.int32),
    "INT32": (np.int32, torch.int32),
    "UINT32": (np.uint32, torch.int64),
    "INT64": (np.int64, torch.int64),
    "BOOL": (np.bool_, torch.bool),
}
#: the ``dtype`` strings of ``cast``/``quantize`` -> MIL DataType names
_DTYPE_STRINGS = {"fp16": "FLOAT16", "fp32": "FLOAT32", "fp64": "FLOAT64", "int8": "INT8",
                  "uint8": "UINT8", "int16": "INT16", "uint16": "UINT16", "int32": "INT32",
                  "uint32": "UINT32", "int64": "INT64", "bool": "BOOL"}
_INT_RANGE = {"INT8": (-128, 127), "UINT8": (0, 255), "INT16": (-32768, 32767),
              "UINT16": (0, 65535)}


def conform(value: Any, dtype: str) -> Any:
    """``value`` as a tensor of MIL type ``dtype``; fp16 values are rounded to fp16."""
    if not isinstance(value, torch.Tensor) or dtype not in _DTYPES:
        return value
    if dtype == "FLOAT16":
        return value.to(torch.float16).to(torch.float32)
    return value.to(_DTYPES[dtype][1])


_BLOB_SENTINEL = 0xDEADBEEF


class _BlobReader:
    """MIL blob storage v2 (``weight.bin``): a 64-byte header, then per blob a 64-byte
    ``blob_metadata`` {u32 sentinel 0xDEADBEEF, u32 dtype, u64 size in bytes, u64 data offset}
    and the data, each 64-byte aligned. ``BlobFileValue.offset`` points at the metadata."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data = path.read_bytes()
        if len(self.data) < 64:
            raise PackageError(f"{path.name}: {len(self.data)} bytes, shorter than a blob header")
        _count, version = struct.unpack_from("<II", self.data, 0)
        if version != 2:
            raise PackageError(f"{path.name}: blob storage version {version}; only 2 is known")

    def read(self, offset: int, np_dtype: Any, count: int) -> np.ndarray:
        if offset + 64 > len(self.data):
            raise PackageError(f"{self.path.name}: blob metadata at {offset} is past the end")
        sentinel, _dtype, size, data_offset = struct.unpack_from("<IIQQ", self.data, offset)
        if sentinel != _BLOB_SENTINEL:
            raise PackageError(f"{self.path.name}: no blob at offset {offset} (bad sentinel)")
        if data_offset + size > len(self.data):
            raise PackageError(f"{self.path.name}: blob at {offset} runs past the end of the file")
        itemsize = np.dtype(np_dtype).itemsize
        if size != count * itemsize:
            raise PackageError(f"{self.path.name}: blob at {offset} holds {size} bytes, but its "
                               f"type needs {count} x {itemsize}")
        return np.frombuffer(self.data, dtype=np_dtype, count=count, offset=data_offset)


@dataclass
class _Decoder:
    layout: PackageLayout
    readers: dict[Path, _BlobReader] = field(default_factory=dict)

    def tensor_type(self, value_type: Any) -> tuple[str, list[int]]:
        """(dtype name, static shape) of a ValueType's tensorType."""
        from pipeline.mlpackage import proto_modules

        mil = proto_modules().MIL_pb2
        tensor = value_type.tensorType
        dtype = mil.DataType.Name(tensor.dataType)
        shape = []
        for dim in tensor.dimensions:
            shape.append(dim.constant.size if dim.WhichOneof("dimension") == "constant" else -1)
        return dtype, shape

    def value(self, value: Any) -> Any:
        """A MIL ``Value`` as a tensor (numeric), ``str`` or list of ``str``."""
        kind = value.type.WhichOneof("type")
        if kind == "listType" and value.WhichOneof("value") == "immediateValue":
            return [self.value(item) for item in value.immediateValue.list.values]
        if kind != "tensorType":
            raise _Unsupported(f"<{kind} value>")
        dtype, shape = self.tensor_type(value.type)
        count = int(np.prod(shape)) if shape else 1
        which = value.WhichOneof("value")
        if dtype == "STRING":
            if which != "immediateValue":
                raise _Unsupported("<string blob value>")
            strings = list(value.immediateValue.tensor.strings.values)
            return strings[0] if not shape else strings
        if dtype not in _DTYPES:
            raise _Unsupported(f"<{dtype} value>")
        np_dtype = _DTYPES[dtype][0]
        if which == "blobFileValue":
            blob = value.blobFileValue
            path = blob_file(self.layout, blob.fileName)
            reader = self.readers.get(path) or self.readers.setdefault(path, _BlobReader(path))
            array = reader.read(blob.offset, np_dtype, count)
        elif which == "immediateValue":
            array = _immediate(value.immediateValue.tensor, np_dtype)
        else:
            raise _Unsupported(f"<{which} value>")
        if array.size != count:
            raise PackageError(f"{self.layout.root.name}: a {dtype} value of shape {shape} holds "
                               f"{array.size} elements")
        array = np.array(array, dtype=np_dtype).reshape(shape)
        return torch.from_numpy(array.astype(_torch_np(dtype), copy=False)).to(_DTYPES[dtype][1])


def _torch_np(dtype: str) -> Any:
    return {"FLOAT16": np.float32, "UINT16": np.int32, "UINT32": np.int64}.get(
        dtype, _DTYPES[dtype][0])


def _immediate(tensor: Any, np_dtype: Any) -> np.ndarray:
    which = tensor.WhichOneof("value")
    if which == "bytes":
        return np.frombuffer(tensor.bytes.values, dtype=np_dtype)
    if which in ("floats", "ints", "bools", "longInts", "doubles"):
        return np.asarray(list(getattr(tensor, which).values))
    raise _Unsupported(f"<immediate {which} value>")


class _Unsupported(Exception):
    """A value or op the evaluator cannot represent; the text names it."""


# -- the program -----------------------------------------------------------------------------


@dataclass
class MilOp:
    type: str
    name: str
    inputs: dict[str, list[tuple[str, Any]]]    # param -> [("name", var) | ("value", value)]
    outputs: list[tuple[str, str]]              # (var name, dtype name)


class MilEvaluator:
    """Executes the ``main`` function of a saved ML Program on PyTorch CPU kernels."""

    def __init__(self, package: Path) -> None:
        spec, layout = load_spec(package)
        if spec.WhichOneof("Type") != "mlProgram":
            raise PackageError(f"{layout.root.name} holds a {spec.WhichOneof('Type')} model, not "
                               "an ML Program")
        self.spec = spec
        self.layout = layout
        program = spec.mlProgram
        if "main" not in program.functions:
            raise PackageError(f"{layout.root.name}: the program has no 'main' function")
        function = program.functions["main"]
        block = function.block_specializations[function.opset]
        self.opset = function.opset
        decoder = _Decoder(layout)
        self.inputs = [(i.name, *decoder.tensor_type(i.type)) for i in function.inputs]
        self.output_names = list(block.outputs)
        self.consts: dict[str, Any] = {}
        self.ops: list[MilOp] = []
        unsupported: set[str] = set()
        for op_spec in block.operations:
            outputs = [(o.name, decoder.tensor_type(o.type)[0]
                        if o.type.WhichOneof("type") == "tensorType" else "OTHER")
                       for o in op_spec.outputs]
            if op_spec.type == "const":
                try:
                    self.consts[outputs[0][0]] = decoder.value(op_spec.attributes["val"])
                except _Unsupported as exc:
                    unsupported.add(f"const {exc}")
                continue
            if op_spec.blocks:
                unsupported.add(op_spec.type)       # control flow (cond, while_loop)
            inputs: dict[str, list[tuple[str, Any]]] = {}
            for param, argument in op_spec.inputs.items():
                bound = []
                for binding in argument.arguments:
                    if binding.WhichOneof("binding") == "name":
                        bound.append(("name", binding.name))
                    else:
                        try:
                            bound.append(("value", decoder.value(binding.value)))
                        except _Unsupported as exc:
                            unsupported.add(f"{op_spec.type} {exc}")
                inputs[param] = bound
            # constexpr ops (iOS16+) carry their constant operands as attributes
            for param, value in op_spec.attributes.items():
                if param == "name" or param in inputs:
                    continue
                try:
                    inputs[param] = [("value", decoder.value(value))]
                except _Unsupported as exc:
                    unsupported.add(f"{op_spec.type} {exc}")
            name = op_spec.attributes["name"].immediateValue.tensor.strings.values[0] \
                if "name" in op_spec.attributes else outputs[0][0]
            self.ops.append(MilOp(op_spec.type, name, inputs, outputs))
            if op_spec.type not in OPS:
                unsupported.add(op_spec.type)
        self.unsupported_ops = sorted(unsupported)
        self._counts: dict[str, int] = {"const": len(self.consts)}
        for op in self.ops:
            self._counts[op.type] = self._counts.get(op.type, 0) + 1
        if not self.unsupported_ops:
            self._fold_constexpr()

    # -- structure ---------------------------------------------------------------------------
    def op_counts(self) -> dict[str, int]:
        """How many ops of each type the program has (as saved, before constexpr folding)."""
        return dict(sorted(self._counts.items()))

    def _fold_constexpr(self) -> None:
        """Evaluate ``constexpr_*`` ops (weight decompression) once."""
        remaining = []
        for op in self.ops:
            if op.type.startswith("constexpr_"):
                self._execute(op, self.consts)
            else:
                remaining.append(op)
        self.ops = remaining

    # -- execution ---------------------------------------------------------------------------
    def _resolve(self, op: MilOp, env: dict[str, Any]) -> dict[str, Any]:
        variadic = OPS[op.type].variadic
        args: dict[str, Any] = {}
        for param, bound in op.inputs.items():
            values = [env[ref] if kind == "name" else ref for kind, ref in bound]
            args[param] = values if param in variadic else values[0]
        return args

    def _execute(self, op: MilOp, env: dict[str, Any]) -> list[Any]:
        try:
            result = OPS[op.type].fn(**self._resolve(op, env))
        except Exception as exc:
            raise RuntimeError(f"{LABEL}: op '{op.name}' ({op.type}) failed: "
                               f"{type(exc).__name__}: {exc}") from exc
        results = list(result) if isinstance(result, tuple) else [result]
        if len(results) != len(op.outputs):
            raise RuntimeError(f"{LABEL}: op '{op.name}' ({op.type}) gave {len(results)} "
                               f"outputs, the program declares {len(op.outputs)}")
        out = []
        for (name, dtype), value in zip(op.outputs, results):
            env[name] = conform(value, dtype)
            out.append(env[name])
        return out

    def run(self, feeds: dict[str, np.ndarray],
            observe: Callable[[str, str, torch.Tensor], None] | None = None) -> dict[str, np.ndarray]:
        """Outputs of ``main`` for ``feeds`` (name -> array with the declared shape).

        ``observe(var_name, op_type, value)`` is called for every value an op produces
        (e.g. to gather activation ranges for calibration).
        """
        if self.unsupported_ops:
            raise UnsupportedMilError(self.unsupported_ops)
        env: dict[str, Any] = dict(self.consts)
        for name, dtype, shape in self.inputs:
            if name not in feeds:
                raise ValueError(f"missing input '{name}'; the program takes "
                                 f"{[i[0] for i in self.inputs]}")
            array = np.asarray(feeds[name])
            if shape and -1 not in shape and list(array.shape) != shape:
                raise ValueError(f"input '{name}' has shape {list(array.shape)}; the program "
                                 f"declares {shape}")
            env[name] = conform(torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)
                                                 if dtype.startswith("FLOAT") else array), dtype)
        with torch.inference_mode():
            for op in self.ops:
                values = self._execute(op, env)
                if observe is not None:
                    for (name, _), value in zip(op.outputs, values):
                        if isinstance(value, torch.Tensor):
                            observe(name, op.type, value)
        return {name: _to_numpy(env[name]) for name in self.output_names}


def _to_numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().numpy().copy()
    return np.asarray(value)


# -- helpers for op implementations ----------------------------------------------------------


def _ints(value: Any) -> list[int]:
    if isinstance(value, torch.Tensor):
        return [int(v) for v in value.reshape(-1).tolist()]
    return [int(v) for v in value]


def _int(value: Any) -> int:
    return int(value.item()) if isinstance(value, torch.Tensor) else int(value)


def _float(value: Any) -> float:
    return float(value.item()) if isinstance(value, torch.Tensor) else float(value)


def _bool(value: Any) -> bool:
    return bool(value.item()) if isinstance(value, torch.Tensor) else bool(value)


def _float_tensor(value: torch.Tensor) -> torch.Tensor:
    return value if value.is_floating_point() else value.to(torch.float32)


def _spatial_pads(pad_type: str, pad: Any, in_sizes: list[int], kernel: list[int],
                  strides: list[int], dilations: list[int]) -> list[tuple[int, int]]:
    """(begin, end) padding per spatial dim for MIL's ``pad_type``."""
    n = len(in_sizes)
    if pad_type == "valid":
        return [(0, 0)] * n
    if pad_type == "custom":
        values = _ints(pad) if pad is not None else [0] * (2 * n)
        return [(values[2 * i], values[2 * i + 1]) for i in range(n)]
    if pad_type in ("same", "same_lower"):
        pads = []
        for size, k, s, d in zip(in_sizes, kernel, strides, dilations):
            out = -(-size // s)
            total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
            small, large = total // 2, total - total // 2
            pads.append((small, large) if pad_type == "same" else (large, small))
        return pads
    raise ValueError(f"unknown pad_type {pad_type!r}")


def _torch_pad(pads: list[tuple[int, int]]) -> list[int]:
    """(begin, end) per leading-to-trailing dim -> F.pad's trailing-first flat list."""
    flat: list[int] = []
    for begin, end in reversed(pads):
        flat += [begin, end]
    return flat


def _along(vector: torch.Tensor, axis: int | None, rank: int) -> torch.Tensor:
    """A scale/zero-point (scalar or vector along ``axis``) shaped to broadcast over rank dims."""
    if vector.dim() == 0 or vector.numel() == 1 and axis is None:
        return vector.reshape(())
    if vector.dim() == rank:
        return vector
    if axis is None:
        raise ValueError(f"a vector scale of shape {list(vector.shape)} needs an axis")
    shape = [1] * rank
    shape[axis % rank] = vector.numel()
    return vector.reshape(shape)


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
    target = _DTYPE_STRINGS.get(dtype)
    if target is None:
        raise ValueError(f"cast to unknown dtype {dtype!r}")
    return conform(x, target)


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
    low, high = _INT_RANGE[dtype]
    return torch.clamp(scaled, low, high).to(_DTYPES[dtype][1])


def _dequantize(q, scale, zero_point, axis):
    rank = q.dim()
    axis = None if axis is None else _int(axis)
    values = q.float()
    if zero_point is not None:
        values = values - _along(zero_point.float(), axis, rank)
    return values * _along(scale.float(), axis, rank)


@mil_op("quantize")
def quantize(input, scale, output_dtype, zero_point=None, axis=None):
    dtype = _DTYPE_STRINGS.get(output_dtype)
    if dtype not in _INT_RANGE:
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
