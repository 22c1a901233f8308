"""Check an ONNX file before any runtime opens it: it parses, and its external data stays home.

An ONNX model may keep tensors in external files named by a ``location`` string. ONNX Runtime
joins that string to the model's folder and reads whatever it names, so a model whose location
is ``../../etc/passwd`` or ``/home/me/.ssh/id_rsa`` turns an outside file into weights (and its
bytes into outputs). onnx's own loader refuses such paths since 1.16; ONNX Runtime's session
does not, so :func:`check_onnx_file` applies the same rules before a session is created: every
external tensor's location is relative, has no ``..``, resolves (links followed) inside the
model's folder to a regular file, and its offset/length lie within that file.
"""
from __future__ import annotations

from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Iterator

import onnx

from pipeline.errors import UserInputError

#: protobuf's own limit for one message
MAX_ONNX_BYTES = 2 << 30


class UnsafeModel(UserInputError):
    """An ONNX model that cannot be opened safely (damaged, or pointing outside its folder)."""


def tensors_of(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Every tensor of ``graph`` and its subgraphs: initializers, sparse initializers and
    tensor-valued node attributes (written out because onnx's walker is private)."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("g"):
                yield from tensors_of(attribute.g)
            for subgraph in attribute.graphs:
                yield from tensors_of(subgraph)


def _location_problem(tensor: onnx.TensorProto, folder: Path) -> str | None:
    info = {entry.key: entry.value for entry in tensor.external_data}
    location = info.get("location", "")
    if not location:
        return f"tensor '{tensor.name[:80]}' is external but names no location"
    posix, windows = PurePosixPath(location), PureWindowsPath(location)
    if posix.is_absolute() or windows.is_absolute() or windows.drive:
        return f"tensor '{tensor.name[:80]}' reads the absolute path {location[:120]!r}"
    if ".." in posix.parts or ".." in windows.parts:
        return f"tensor '{tensor.name[:80]}' reads {location[:120]!r}, which leaves the folder"
    base = folder.resolve()
    target = (folder / location).resolve()
    if not target.is_relative_to(base):
        return (f"tensor '{tensor.name[:80]}' reads {location[:120]!r}, a link to {target}, "
                "outside the model's folder")
    if not target.is_file():
        return f"tensor '{tensor.name[:80]}' reads {location[:120]!r}, which is not a file"
    try:
        offset, length = int(info.get("offset", 0)), int(info.get("length", 0) or 0)
    except ValueError:
        return f"tensor '{tensor.name[:80]}' has a non-numeric offset or length"
    if offset < 0 or length < 0 or offset + length > target.stat().st_size:
        return f"tensor '{tensor.name[:80]}' reads past the end of {location[:120]!r}"
    return None


def check_onnx_file(path: Path) -> onnx.ModelProto:
    """The model at ``path`` (external data not loaded), after the checks of the module doc;
    :class:`UnsafeModel` with one line naming the problem otherwise."""
    path = Path(path)
    if not path.is_file():
        raise UnsafeModel(f"{path} is not a file; pass an .onnx model file")
    size = path.stat().st_size
    if size > MAX_ONNX_BYTES:
        raise UnsafeModel(f"{path} is {size} bytes, over ONNX's 2 GiB limit for one file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - DecodeError, RuntimeError, ValueError...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise UnsafeModel(f"{path} is not a valid ONNX model ({type(exc).__name__}: {first}); "
                          "pass a file written by an ONNX exporter") from None
    if not model.HasField("graph"):
        raise UnsafeModel(f"{path} holds no graph; pass a file written by an ONNX exporter")
    for tensor in tensors_of(model.graph):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            problem = _location_problem(tensor, path.parent)
            if problem:
                raise UnsafeModel(f"{path}: {problem}; external data must lie in files inside "
                                  "the model's folder")
    return model
