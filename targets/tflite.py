"""Android target: ONNX -> TFLite fp32 / fp16 / int8 through onnx2tf, run on the LiteRT interpreter.

Conversion runs in an isolated child process (``pipeline/tflite_convert.py``): TensorFlow and
onnx2tf are never imported in this process. One stage per precision (``tflite:fp32`` ...), each
converting the trunk's ONNX export; each node records the .tflite's operator counts, the facts an
app needs to feed it (the sidecar), and parity and latency on LiteRT with XNNPACK.

Config keys read here with defaults (wired in the trunk separately):
``tflite_layout`` ("NHWC", the Android convention, or "NCHW") and ``tflite_int8_io`` (False: the
int8 model takes and returns float32; True: int8 tensors quantized with their own scale/zero-point).
"""
from __future__ import annotations

import importlib.util
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import StageError, UserInputError
from pipeline.graph import OutputFile, Stage, StageOutput
from pipeline.tflite_convert import (CONV_OPS, ERROR_MARK, LAYOUTS, graph_problems,
                                     io_details, op_counts)
from pipeline.tflite_quantize import float_compute_ops
from targets.base import Runner, Target, register


RUNTIME_MODULES = ("onnx2tf", "tensorflow", "tf_keras", "ai_edge_litert")
SIDECAR = "model.json"


# -- runner ------------------------------------------------------------------------------------


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype: np.dtype) -> np.ndarray:
    """float -> integer tensor with the tensor's own affine parameters (round half to even,
    as TFLite's reference quantizer does, then clamp to the dtype's range)."""
    info = np.iinfo(dtype)
    q = np.round(np.asarray(x, np.float32) / np.float32(scale)) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return ((np.asarray(q, np.int32) - zero_point) * np.float32(scale)).astype(np.float32)


def detect_layout(shape: list[int] | tuple[int, ...]) -> str | None:
    """NHWC or NCHW for a 4-D image input shape; None when not 4-D. Three channels decide
    first, then 1 or 4; NHWC when still ambiguous (e.g. a 3x3 image)."""
    if len(shape) != 4:
        return None
    for channels in ((3,), (1, 4)):
        if shape[3] in channels and shape[1] not in channels:
            return "NHWC"
        if shape[1] in channels and shape[3] not in channels:
            return "NCHW"
    return "NHWC"


class LiteRTRunner(Runner):
    """LiteRT interpreter (``ai_edge_litert``) with its default XNNPACK delegate.

    Feeds are the pipeline's float32 NCHW arrays: they are transposed to the model's layout and,
    for integer inputs, quantized with the input tensor's scale/zero-point; integer outputs are
    dequantized with theirs. The model's batch is 1 (the mobile convention), so a batch of N is
    run as N invocations.
    """

    runtime = "litert-xnnpack"

    def __init__(self, path: Path, threads: int = 1, layout: str | None = None) -> None:
        super().__init__(threads)
        self.path = Path(path)
        self.layout = layout            # None: read from the model's input shape
        self._interpreter = None
        self._inputs: list[dict[str, Any]] = []
        self._outputs: list[dict[str, Any]] = []
        self.xnnpack = False

    def activate_impl(self) -> None:
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=str(self.path), num_threads=self.threads)
        interpreter.allocate_tensors()
        self._interpreter = interpreter
        self._inputs = interpreter.get_input_details()
        self._outputs = interpreter.get_output_details()
        try:  # a delegated partition appears as an extra node named DELEGATE
            ops = interpreter._get_ops_details()
        except Exception:  # a private API: never let it break a run
            ops = []
        # XNNPACK is the only delegate the CPU interpreter applies by default (none is loaded)
        names = {(op.get("op_name") or "").upper() for op in ops}
        self.xnnpack = bool(names & {"DELEGATE", "TFLITEXNNPACKDELEGATE"})
        if self.layout is None:
            self.layout = detect_layout(list(self._inputs[0]["shape"])) if self._inputs else None

    def deactivate_impl(self) -> None:
        self._interpreter = None

    def input_names_impl(self) -> list[str]:
        return [d["name"] for d in self._inputs]

    def _set(self, detail: dict[str, Any], value: np.ndarray) -> None:
        value = np.asarray(value, np.float32)
        if value.ndim == 4 and self.layout == "NHWC":
            value = value.transpose(0, 2, 3, 1)
        dtype = np.dtype(detail["dtype"])
        if dtype.kind in "iu":
            scale, zero_point = detail["quantization"]
            value = quantize(value, scale, zero_point, dtype)
        else:
            value = value.astype(dtype)
        self._interpreter.set_tensor(detail["index"], np.ascontiguousarray(value))

    def _get(self, detail: dict[str, Any]) -> np.ndarray:
        value = self._interpreter.get_tensor(detail["index"])
        if np.dtype(detail["dtype"]).kind in "iu":
            scale, zero_point = detail["quantization"]
            return dequantize(value, scale, zero_point)
        return np.array(value, dtype=np.float32)

    def infer_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        by_name = {d["name"]: d for d in self._inputs}
        unknown = set(feeds) - set(by_name)
        if unknown:
            raise KeyError(f"unknown input(s) {sorted(unknown)}; the model takes {sorted(by_name)}")
        batch = int(np.asarray(next(iter(feeds.values()))).shape[0])
        model_batch = int(self._inputs[0]["shape"][0]) if len(self._inputs[0]["shape"]) else 1
        step = batch if model_batch == batch else 1
        if step == 1 and model_batch != 1:
            raise ValueError(f"the model takes a batch of {model_batch}, got {batch}")
        parts: dict[str, list[np.ndarray]] = {d["name"]: [] for d in self._outputs}
        for start in range(0, batch, step):
            for name, value in feeds.items():
                self._set(by_name[name], np.asarray(value)[start:start + step])
            self._interpreter.invoke()
            for detail in self._outputs:
                parts[detail["name"]].append(self._get(detail))
        return {name: np.concatenate(values, axis=0) for name, values in parts.items()}


# -- stage -------------------------------------------------------------------------------------


class TfliteConvertStage(Stage):
    """``tflite:<precision>``: the trunk's ONNX to one .tflite, checked and timed on LiteRT."""

    stage = "convert_tflite"
    version = 4
    tools = ("onnx2tf", "tensorflow", "tf_keras", "ai-edge-litert", "onnx", "onnxsim",
             "onnxruntime", "numpy")
    target = "tflite"

    def __init__(self, ctx: Any, precision: str) -> None:
        self.ctx = ctx
        self.precision = precision
        self.inputs = ("onnx", "reference")
        self.outputs = (f"tflite_{precision}",)
        self.layout = str(getattr(ctx.config, "tflite_layout", "NHWC") or "NHWC").upper()
        if self.layout not in LAYOUTS:
            raise UserInputError(f"tflite_layout must be one of {list(LAYOUTS)}, "
                                 f"got {self.layout!r}")
        self.int8_io = bool(getattr(ctx.config, "tflite_int8_io", False))

    @property
    def name(self) -> str:
        return f"tflite:{self.precision}"

    def config(self) -> dict[str, Any]:
        from pipeline.calibration import calibration_identity

        config = {"precision": self.precision, "layout": self.layout,
                  "preprocessing": asdict(self.ctx.source.preprocessing),
                  "labels": _labels(self.ctx), **self.ctx.measure_config(self.precision)}
        if self.precision == "int8":
            config.update(int8_io=self.int8_io, calibration=calibration_identity(self.ctx),
                          per_channel=self._quant("per_channel", True),
                          fallback=self._quant("fallback", True),
                          max_float_layers=self._quant("max_float_layers", 8))
        return config

    def _quant(self, name: str, default: Any) -> Any:
        quant = getattr(self.ctx.config, "quant", None)
        return getattr(quant, name, default) if quant is not None else default

    def _accuracy_drop(self) -> float | None:
        drop = getattr(self.ctx, "accuracy_drop", None)
        return drop(self.precision) if callable(drop) else None

    def _check(self, path: Path, reference: Any) -> dict[str, Any]:
        """Parity, accuracy and latency of one .tflite on LiteRT (the node's record)."""
        from pipeline.verify import check_node

        c = self.ctx.config
        runner = LiteRTRunner(path, c.threads, self.layout)
        record = check_node(runner, reference, self.ctx.tolerance(self.precision), c.bench,
                            self._accuracy_drop())
        record["latency"]["delegate"] = "xnnpack" if runner.xnnpack else "none"
        return record

    def run(self, inputs: dict, workdir: Path) -> StageOutput:
        from pipeline.reference import Reference

        reference = Reference.load(inputs["reference"].path)
        path = workdir / f"model_{self.precision}.tflite"
        facts = self._convert(inputs["onnx"].path, path, reference, workdir)
        problems = graph_problems(facts["ops"])
        if problems:
            raise StageError(self.name, "; ".join(problems) + f" (op counts: {facts['ops']})")
        record = self._check(path, reference)
        mixed = None
        if self.precision == "int8":
            warnings = list(self._calibration["warnings"])
            method = self._quant("method", "minmax")
            if method != "minmax":
                warnings.append(f"quant_method {method!r} is not available in the TFLite "
                                "converter, which calibrates with min/max ranges; used minmax")
            if record["parity"]["verdict"] == "fail" and self._quant("fallback", True):
                record, mixed, warning = self._fall_back(path, reference, record, workdir)
                warnings.append(warning)
                if mixed.get("cost"):   # the published file changed: describe that one
                    facts = {**facts, "ops": op_counts(path), **io_details(path)}
            floats = float_compute_ops(path.read_bytes())
            kept = set((mixed or {}).get("float_layers") or [])   # [] when the search failed
            unexpected = sorted({op["op"] for op in floats if op["tensor"] not in kept})
            if unexpected:
                warnings.append(f"{sum(op['tensor'] not in kept for op in floats)} op(s) compute "
                                f"in float in the int8 model ({', '.join(unexpected)}): the TFLite "
                                "quantizer has no int8 kernel for them")
            if warnings:
                record["warnings"] = warnings
        info = self._info(facts)
        if self.precision == "int8":
            info["calibration"] = self._calibration
            info["float_compute_ops"] = floats
            if mixed is not None:
                info["mixed_precision"] = mixed
        if self.precision == "fp32" and record["parity"]["verdict"] == "fail":
            info["onnx2tf_per_op"] = self._per_op(inputs["onnx"].path, reference, workdir)
        record["info"] = info
        meta = {"precision": self.precision, "layout": self.layout}
        return StageOutput({self.outputs[0]: OutputFile(path, "tflite", meta)}, record)

    def _fall_back(self, path: Path, reference: Any, record: dict[str, Any],
                   workdir: Path) -> tuple[dict, dict, str]:
        """Keep the most sensitive layers in float until int8 passes its gates (the search of
        ``pipeline.sensitivity``, on candidates the converter's child re-quantizes from the one
        calibration); the passing model replaces ``path``. Returns the record, the
        ``mixed_precision`` summary and a warning."""
        import time

        from pipeline.sensitivity import Probe, Ranking, conclude, search_float_layers
        from pipeline.verify import check_gates

        c, quant_cap = self.ctx.config, int(self._quant("max_float_layers", 8))
        start, int8_bytes = time.perf_counter(), path.stat().st_size
        probe = Probe.of(reference)
        int8_error = probe.error_of(LiteRTRunner(path, c.threads, self.layout))
        result = self._isolated("pipeline.tflite_quantize:mixed_precision_candidates", {
            "calibrated_path": str(workdir / "calibrated.tflite"),
            "probe_path": str(probe.save(workdir / "probe.npz")),
            "out_dir": str(workdir / "mixed"), "layout": self.layout,
            "per_channel": bool(self._quant("per_channel", True)), "int8_io": self.int8_io,
            "max_float_layers": quant_cap, "threads": c.threads})
        layers = {layer["tensor"]: layer for layer in result["layers"]}
        candidates = {int(k): Path(v) for k, v in result["candidates"].items()}

        def make(float_layers: list[str]) -> tuple[Path, dict[str, Any]]:
            return candidates[len(float_layers)], {}

        def gate(candidate: Path) -> dict[str, Any]:
            return check_gates(LiteRTRunner(candidate, c.threads, self.layout), reference,
                               self.ctx.tolerance("int8"), self._accuracy_drop())

        found = search_float_layers(Ranking(int8_error, result["sensitivity"]), make,
                                    gate, max_float_layers=quant_cap)
        costs = {name: (layer["params"], layer["macs"]) for name, layer in layers.items()}
        record, summary, warning = conclude(
            found, record, path, lambda p: self._check(p, reference), costs,
            int8_bytes=int8_bytes, started=start,
            cap=quant_cap, label=lambda name: layer_label(layers[name]))
        summary["layers"] = {name: {**layers[name], "label": layer_label(layers[name])}
                             for name in summary["sensitivity"]}
        summary["ranking_seconds"] = result["seconds"]
        return record, summary, warning

    # -- helpers ---------------------------------------------------------------------------
    def _isolated(self, function: str, kwargs: dict[str, Any]) -> Any:
        from pipeline.isolate import IsolatedCallError, run_isolated

        target = function if ":" in function else f"pipeline.tflite_convert:{function}"
        try:
            return run_isolated(target, kwargs,
                                stage=self.name, model=self.ctx.source.label,
                                timeout_s=self.ctx.config.convert_timeout_s)
        except IsolatedCallError as exc:
            raise _clear_error(self.name, self.ctx.source.label, exc) from None

    def _convert(self, onnx_path: Path, out: Path, reference: Any, workdir: Path) -> dict:
        kwargs: dict[str, Any] = {
            "onnx_path": str(onnx_path), "out_path": str(out), "precision": self.precision,
            "layout": self.layout, "sample_path": str(_sample_file(reference, workdir))}
        if self.precision == "int8":
            kwargs.update(calib_path=str(self._calibration_file(workdir)), int8_io=self.int8_io,
                          per_channel=bool(self._quant("per_channel", True)),
                          calibrated_path=str(workdir / "calibrated.tflite"))
        return self._isolated("convert", kwargs)

    def _calibration_file(self, workdir: Path) -> Path:
        """The pipeline's calibration set: real images, preprocessed as the model expects."""
        from pipeline.calibration import calibration_set

        calib = calibration_set(self.ctx)
        self._calibration = {"source": calib.source, "images": int(len(calib.batch)),
                             "warnings": list(calib.warnings)}
        path = workdir / "calibration.npy"
        np.save(path, np.ascontiguousarray(calib.batch, dtype=np.float32))
        return path

    def _per_op(self, onnx_path: Path, reference: Any, workdir: Path) -> dict[str, Any]:
        """onnx2tf's per-op ONNX-vs-TF comparison, after an fp32 parity failure."""
        try:
            result = self._isolated("compare_per_op", {
                "onnx_path": str(onnx_path), "layout": self.layout,
                "sample_path": str(_sample_file(reference, workdir))})
        except StageError as exc:
            return {"error": str(exc).splitlines()[0]}
        first = result.get("first_diverging")
        result["summary"] = (
            f"first diverging ONNX op: '{first['node']}' ({first['op']}), output "
            f"'{first['tensor']}', max abs error {first['max_abs_error']:.3g} > "
            f"atol {result['atol']:g}" if first else
            f"all {result['checked']} ONNX op outputs match the TF graph within atol "
            f"{result['atol']:g}: the error comes from the TFLite conversion or runtime")
        return result

    def _info(self, facts: dict[str, Any]) -> dict[str, Any]:
        ops = facts["ops"]
        convs = sum(ops.get(n, 0) for n in CONV_OPS)
        prep = self.ctx.source.preprocessing
        tensor_in = facts["inputs"][0] if facts["inputs"] else {}
        layout = detect_layout(tensor_in.get("shape", [])) or self.layout
        return {
            "converter": f"onnx2tf {facts['versions']['onnx2tf']} (TensorFlow "
                         f"{facts['versions']['tensorflow']})",
            "tools": facts["versions"],
            "ops": ops, "op_total": sum(ops.values()),
            "transposes": ops.get("TRANSPOSE", 0), "convolutions": convs,
            "layout": layout, "int8_io": facts["int8_io"], "quantization": facts["quantization"],
            "offline": facts["offline"],
            "sidecar": {
                "inputs": [{**t, "layout": detect_layout(t["shape"])} for t in facts["inputs"]],
                "outputs": facts["outputs"],
                "preprocessing": {**asdict(prep), "scale": "pixel / 255, then (x - mean) / std"},
                "labels": _labels(self.ctx)},
        }


def layer_label(layer: dict[str, Any]) -> str:
    """A weighted layer as people read it: op, position among the weighted layers, output
    shape (e.g. ``CONV_2D #0 (1x64x64x32)``); its tensor name stays in the record."""
    shape = "x".join(str(d) for d in layer.get("output_shape", []))
    return f"{layer['op']} #{layer['index']}" + (f" ({shape})" if shape else "")


def _labels(ctx: Any) -> list[str] | None:
    """Class names when the run knows them: a ``labels`` key (list or text file) if the config
    has one, else the classes of the labelled evaluation set (``eval`` folder's class folders,
    or the built-in digits); None when unknown or when their count differs from the model's."""
    c = ctx.config
    labels: list[str] | None = None
    explicit = getattr(c, "labels", None)
    if isinstance(explicit, (list, tuple)):
        labels = [str(x) for x in explicit]
    elif explicit is not None and Path(explicit).is_file():
        labels = [line.strip() for line in Path(explicit).read_text().splitlines() if line.strip()]
    elif getattr(c, "eval", None) is not None:
        from pipeline.data import list_images

        root = Path(c.eval)
        try:
            labels = sorted({p.relative_to(root).parts[0] for p in list_images(root)
                             if len(p.relative_to(root).parts) > 1})
        except Exception:  # a bad folder is reported by the stages that read it
            labels = None
    elif getattr(c, "dataset", None) == "digits":
        from pipeline.data import digits_splits

        labels = list(digits_splits(c.parity.seed)["eval"].classes)
    if labels is not None and len(labels) != c.num_classes:
        return None
    return labels


def _sample_file(reference: Any, workdir: Path) -> Path:
    """The run's real photos (NHWC, normalised) for onnx2tf's own dummy inferences."""
    path = workdir / "photos_nhwc.npy"
    if not path.is_file():
        kinds = np.asarray(reference.inputs.kinds)
        batch = reference.inputs.batch
        photos = batch[kinds == "photo"] if (kinds == "photo").any() else batch
        np.save(path, np.ascontiguousarray(photos.transpose(0, 2, 3, 1), dtype=np.float32))
    return path


def _clear_error(stage: str, model: str, exc: Any):
    """One clear line (the converter's own reason when it gave one) plus the output tail."""
    reason = None
    for line in reversed(exc.tail):
        text = line.strip()
        if text.startswith("ConversionError:"):
            reason = text[len("ConversionError:"):].strip()
            break
        if text.startswith(ERROR_MARK):
            reason = text[len(ERROR_MARK):].strip()
            break
    if reason is None:
        last = exc.tail[-1].strip() if exc.tail else ""
        reason = f"{exc.problem} while converting {model}" + (f": {last[:300]}" if last else "")
    shown = "\n    ".join(exc.tail[-12:]) if exc.tail else "(no output)"
    error = StageError(stage, f"{reason}\n  last converter output:\n    {shown}")
    error.reason = reason
    return error


# -- sidecar -----------------------------------------------------------------------------------


def sidecar_entry(node: dict[str, Any], file: Path) -> dict[str, Any]:
    from pipeline.artifact import sha256_file

    side = node["info"]["sidecar"]
    return {"file": file.name, "sha256": sha256_file(file), "bytes": file.stat().st_size,
            "input": side["inputs"][0] if len(side["inputs"]) == 1 else side["inputs"],
            "outputs": side["outputs"], "int8_io": node["info"].get("int8_io", False),
            "parity": {k: node["parity"].get(k) for k in ("verdict", "max_rel", "cosine",
                                                           "top1_agreement")}}


def build_sidecar(folder: Path, nodes: list[dict[str, Any]]) -> dict[str, Any]:
    """``model.json``: what an Android app needs to feed each published .tflite.

    Entries of earlier runs are kept while their file is still there with the same sha256."""
    folder = Path(folder)
    previous: dict[str, Any] = {}
    try:
        previous = json.loads((folder / SIDECAR).read_text()).get("models", {})
    except (OSError, ValueError, AttributeError):
        previous = {}
    models: dict[str, Any] = {}
    for precision, entry in previous.items():
        path = folder / str(entry.get("file", ""))
        try:
            from pipeline.artifact import sha256_file

            if path.is_file() and sha256_file(path) == entry.get("sha256"):
                models[precision] = entry
        except OSError:
            continue
    for node in nodes:
        path = Path(node["artifact"]["path"])
        models[node["precision"]] = sidecar_entry(node, path)
    first = nodes[0]["info"]["sidecar"]
    fp = next((n for n in nodes if n["precision"] == "fp32"), nodes[0])["info"]["sidecar"]
    prep = first["preprocessing"]
    tensor = fp["inputs"][0]
    return {
        "schema": 1,
        "format": "tflite",
        "runtime": "LiteRT (TensorFlow Lite); batch 1",
        "input": {"name": tensor["name"], "shape": tensor["shape"], "layout": tensor["layout"],
                  "dtype": "float32", "color": "RGB", "mean": list(prep["mean"]),
                  "std": list(prep["std"]), "resize": prep["resize"], "crop": prep["crop"],
                  "interpolation": prep.get("interpolation", "bilinear"),
                  "normalisation": prep.get("scale")},
        "labels": first.get("labels"),
        "models": dict(sorted(models.items())),
    }


# -- target ------------------------------------------------------------------------------------


@register
class TfliteTarget(Target):
    """TFLite for Android: fp32, fp16 (fp16 weights) and int8 (full-integer, per-channel)."""

    name = "tflite"
    platform = "android"
    precisions = ("fp32", "fp16", "int8")
    suffixes = (".tflite",)

    def unavailable_reason(self) -> str | None:
        missing = [m for m in RUNTIME_MODULES if importlib.util.find_spec(m) is None]
        if missing:
            return f"{', '.join(missing)} not importable; run `make setup`"
        return None

    def stages(self, ctx, precisions):
        return [TfliteConvertStage(ctx, p) for p in self.precisions if p in precisions]

    def runner(self, path: Path, threads: int) -> Runner:
        return LiteRTRunner(path, threads)

    def publish_name(self, output: str, precision: str, suffix: str) -> str:
        return f"model_{precision}{suffix}"

    def write_sidecar(self, folder: Path, nodes: list[dict]) -> None:
        from pipeline.files import atomic_write_bytes

        sidecar = build_sidecar(Path(folder), nodes)
        atomic_write_bytes(Path(folder) / SIDECAR,
                           (json.dumps(sidecar, indent=2) + "\n").encode())
