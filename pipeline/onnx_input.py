"""``--model path/to/model.onnx``: an ONNX model as the run's input, checked before any stage.

The chain then starts at the ONNX node: the reference is the given model on ONNX Runtime (every
node's parity says so), int8 quantization, TFLite and TensorRT follow as usual. Core ML is
refused: coremltools >= 6 has no ONNX front end, and no ONNX-to-PyTorch importer is installed.
The model must take one NCHW image batch with a fixed square size (the batch may be dynamic)
and give (N, classes) logits; anything else is one clear error naming what to change.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import UserInputError

#: the opsets the ONNX -> TFLite / TensorRT converters and ONNX Runtime 1.23 take
MIN_OPSET, MAX_OPSET = 13, 21
#: the newest ONNX IR version ONNX Runtime 1.23 loads
MAX_IR_VERSION = 11
#: what the reference label says in every parity record of an ONNX-input run
REFERENCE_LABEL = "ONNX Runtime, not PyTorch"


def is_onnx_ref(ref: str) -> bool:
    """Whether ``--model`` names an ONNX file."""
    return ref.lower().endswith(".onnx")


@dataclass(frozen=True)
class OnnxInput:
    """What the run needs to know about the given model."""

    path: Path
    input_name: str
    resolution: int
    num_classes: int
    opset: int
    params: int


def _dims(value_info: Any) -> list[int | str]:
    shape = value_info.type.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in shape.dim]


def inspect_onnx(path: str | Path, side: int | None = None) -> OnnxInput:
    """The model's input, size and classes, after :func:`pipeline.onnx_guard.check_onnx_file`
    (parses; external data only from inside its folder); UserInputError otherwise. ``side``
    (``--resolution``) is the square size a dynamic height/width is fixed at."""
    from pipeline.onnx_guard import check_onnx_file

    path = Path(path)
    model = check_onnx_file(path)
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
                default=0)
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise UserInputError(f"{path}: opset {opset}; the converters take opsets {MIN_OPSET} to "
                             f"{MAX_OPSET}: re-export with opset_version={min(max(opset, MIN_OPSET), MAX_OPSET)}")
    if model.ir_version > MAX_IR_VERSION:
        raise UserInputError(f"{path}: ONNX IR version {model.ir_version}; ONNX Runtime reads up "
                             f"to IR {MAX_IR_VERSION}: save the model with ir_version = "
                             f"{MAX_IR_VERSION} (its opset {opset} needs no newer IR)")
    weights = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in weights]
    if len(inputs) != 1:
        raise UserInputError(f"{path} has {len(inputs)} inputs "
                             f"({', '.join(i.name for i in inputs)[:200]}); the pipeline feeds "
                             "one image tensor: export a model with a single (N, 3, H, W) input")
    dims = _dims(inputs[0])
    where = f"{path}: input '{inputs[0].name}' has shape {dims}"
    if len(dims) != 4:
        raise UserInputError(f"{where}; pass a model that takes an (N, 3, H, W) image batch")
    if dims[1] != 3:
        layout = " (NHWC?)" if dims[3] == 3 else ""
        raise UserInputError(f"{where}{layout}; the pipeline feeds NCHW RGB (N, 3, H, W): "
                             "export the model with channels first")
    if not all(isinstance(d, int) and d > 0 for d in dims[2:]):
        if side is None:
            raise UserInputError(f"{where}: a dynamic height or width; pass --resolution N "
                                 "(the square size to fix it at: the mobile converters need a "
                                 "fixed size) or export it with a fixed input size")
        dims[2:] = [d if isinstance(d, int) and d > 0 else side for d in dims[2:]]
    if dims[2] != dims[3]:
        raise UserInputError(f"{where}: not square; the pipeline's inputs are square "
                             "(H == W): export the model at a square size")
    if isinstance(dims[0], int) and dims[0] not in (0, 1):
        raise UserInputError(f"{where}: a fixed batch of {dims[0]}; export it with batch 1 or "
                             "a dynamic batch")
    if len(model.graph.output) != 1:
        raise UserInputError(f"{path} has {len(model.graph.output)} outputs; the pipeline "
                             "compares one (N, classes) logits tensor")
    out = _dims(model.graph.output[0])
    if len(out) != 2 or not isinstance(out[1], int) or out[1] < 1:
        raise UserInputError(f"{path}: output shape {out}; the pipeline needs (N, classes) "
                             "logits with a fixed class count")
    params = sum(_elements(t) for t in model.graph.initializer)
    return OnnxInput(path, inputs[0].name, int(dims[2]), int(out[1]), opset, params)


def _elements(tensor: Any) -> int:
    count = 1
    for d in tensor.dims:
        count *= int(d)
    return count


def with_model_facts(config: Any) -> Any:
    """The config with ``resolution`` and ``num_classes`` taken from the ONNX model; an option
    the user set to something else is an error naming both."""
    given_side = config.resolution if "resolution" in config.model_fields_set else None
    facts = inspect_onnx(config.model, given_side)
    update: dict[str, Any] = {}
    for key, value in (("resolution", facts.resolution), ("num_classes", facts.num_classes)):
        given = getattr(config, key)
        if key in config.model_fields_set and given != value:
            flag = "--" + key.replace("_", "-")
            raise UserInputError(f"{flag} {given} but {config.model} has {value}; drop "
                                 f"{flag} (an ONNX model's own size is used) or pass {value}")
        update[key] = value
    return config.model_copy(update=update)


def onnx_digest(path: str | Path) -> str:
    """sha256 of the model file and of every external data file it names (sorted by name)."""
    import onnx

    from pipeline.artifact import sha256_file

    path = Path(path)
    digest = hashlib.sha256(sha256_file(path).encode())
    model = onnx.load(str(path), load_external_data=False)
    for location in external_files(model):   # check_onnx_file confined them to the folder
        digest.update(location.encode() + b"\0" + sha256_file(path.parent / location).encode())
    return digest.hexdigest()


def external_files(model: Any) -> list[str]:
    """The external data files a model's tensors name, sorted."""
    import onnx

    from pipeline.onnx_guard import tensors_of

    return sorted({entry.value for t in tensors_of(model.graph)
                   if t.data_location == onnx.TensorProto.EXTERNAL
                   for entry in t.external_data if entry.key == "location"})


def self_contained_copy(path: str | Path, dest: Path, side: int | None = None
                        ) -> tuple[Path, Any]:
    """The model as one file at ``dest`` (external data read in, from inside its folder only,
    at most protobuf's 2 GiB in all), and the loaded model, so the cache holds everything the
    converters read. A dynamic height/width of the input is fixed at ``side``."""
    import onnx

    from pipeline.onnx_guard import MAX_ONNX_BYTES, check_onnx_file

    path = Path(path)
    model = check_onnx_file(path)
    total = path.stat().st_size + sum((path.parent / loc).stat().st_size
                                      for loc in external_files(model))
    if total > MAX_ONNX_BYTES:
        raise UserInputError(f"{path} and its external data hold {total} bytes, over the 2 GiB "
                             "one self-contained ONNX file can carry; pass a smaller model")
    onnx.load_external_data_for_model(model, str(path.parent))
    if side is not None:
        weights = {t.name for t in model.graph.initializer}
        image = [i for i in model.graph.input if i.name not in weights][0]
        for dim in list(image.type.tensor_type.shape.dim)[2:]:
            if not dim.HasField("dim_value") or dim.dim_value < 1:
                dim.Clear()
                dim.dim_value = side
    dest.write_bytes(model.SerializeToString(deterministic=True))
    return dest, model
