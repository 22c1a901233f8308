"""The MIL program reader and evaluator: values, the op registry, the decoder, the run loop.

The op implementations live in ops_nn, ops_elementwise and ops_tensor (registered with
:func:`mil_op`); see the package doc for what the evaluator is and is not.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch

from pipeline.errors import MobileExportError
from targets.coreml.mlpackage import PackageError, PackageLayout, blob_file, load_spec

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
DTYPES: dict[str, tuple[Any, torch.dtype]] = {
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
DTYPE_STRINGS = {"fp16": "FLOAT16", "fp32": "FLOAT32", "fp64": "FLOAT64", "int8": "INT8",
                  "uint8": "UINT8", "int16": "INT16", "uint16": "UINT16", "int32": "INT32",
                  "uint32": "UINT32", "int64": "INT64", "bool": "BOOL"}
INT_RANGE = {"INT8": (-128, 127), "UINT8": (0, 255), "INT16": (-32768, 32767),
              "UINT16": (0, 65535)}


def conform(value: Any, dtype: str) -> Any:
    """``value`` as a tensor of MIL type ``dtype``; fp16 values are rounded to fp16."""
    if not isinstance(value, torch.Tensor) or dtype not in DTYPES:
        return value
    if dtype == "FLOAT16":
        return value.to(torch.float16).to(torch.float32)
    return value.to(DTYPES[dtype][1])


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
        from targets.coreml.mlpackage import proto_modules

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
        if dtype not in DTYPES:
            raise _Unsupported(f"<{dtype} value>")
        np_dtype = DTYPES[dtype][0]
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
        return torch.from_numpy(array.astype(_torch_np(dtype), copy=False)).to(DTYPES[dtype][1])


def _torch_np(dtype: str) -> Any:
    return {"FLOAT16": np.float32, "UINT16": np.int32, "UINT32": np.int64}.get(
        dtype, DTYPES[dtype][0])


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
