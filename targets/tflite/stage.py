"""``tflite:<precision>``: the trunk's ONNX to one .tflite (converted in a child process), checked
and timed on LiteRT; int8 falls back to mixed precision through pipeline.int8."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.errors import StageError, UserInputError
from pipeline.graph import OutputFile, Stage, StageOutput
from targets.tflite.convert import LAYOUTS
from targets.tflite.inspect import CONV_OPS, graph_problems, io_details, op_counts
from targets.tflite.quantize import float_compute_ops
from targets.tflite.runner import LiteRTRunner, detect_layout
from targets.tflite.sidecar import labels_for

if TYPE_CHECKING:
    from pipeline.verify import Checks

#: what :meth:`TfliteConvertStage.prepare` leaves in the work folder for its run
PREPARED = "prepared.json"


class TfliteConvertStage(Stage):
    """``tflite:<precision>``: the trunk's ONNX to one .tflite, checked and timed on LiteRT."""

    stage = "convert_tflite"
    #: 5: the int8 fallback ranks on a 96-input sample, one process per core; 6: converted
    #: from a frozen concrete function, with a serving_default signature written afterwards
    version = 7   # the record now carries onnx2tf's tensor names (per-layer localisation)
    tools = ("onnx2tf", "tensorflow", "tf_keras", "ai-edge-litert", "onnx", "onnxsim",
             "onnxruntime", "numpy")
    target = "tflite"
    prepares = True   # the conversion runs side by side with the other targets' (pipeline.prepare)

    def __init__(self, ctx: Any, precision: str) -> None:
        self.ctx = ctx
        self.precision = precision
        self.inputs = ("onnx", "reference")
        self.outputs = (f"tflite_{precision}",)
        self.layout = ctx.config.tflite_layout
        if self.layout not in LAYOUTS:
            raise UserInputError(f"tflite_layout must be one of {list(LAYOUTS)}, "
                                 f"got {self.layout!r}")
        self.int8_io = ctx.config.tflite_int8_io

    @property
    def name(self) -> str:
        return f"tflite:{self.precision}"

    def config(self) -> dict[str, Any]:
        from pipeline.calibration import calibration_identity

        config = {"precision": self.precision, "layout": self.layout,
                  "preprocessing": asdict(self.ctx.source.preprocessing),
                  "labels": labels_for(self.ctx), **self.ctx.measure_config(self.precision)}
        if self.precision == "int8":
            quant = self.ctx.config.quant
            config.update(int8_io=self.int8_io, calibration=calibration_identity(self.ctx),
                          per_channel=quant.per_channel, fallback=quant.fallback,
                          max_float_layers=quant.max_float_layers)
        return config

    def _check(self, path: Path, reference: Any) -> Checks:
        """Parity, accuracy and latency of one .tflite on LiteRT (the node's checks)."""
        from pipeline.verify import check_node

        c = self.ctx.config
        runner = LiteRTRunner(path, c.threads, self.layout)
        checks = check_node(runner, reference, self.ctx.tolerance(self.precision), c.bench,
                            self.ctx.accuracy_drop(self.precision))
        if checks.latency is not None:
            checks.latency["delegate"] = "xnnpack" if runner.xnnpack else "none"
        return checks

    def prepare(self, inputs: dict, workdir: Path) -> None:
        """Convert (in a child process); the facts go to ``prepared.json`` for :meth:`run`."""
        from pipeline.reference import Reference

        reference = Reference.load(inputs["reference"].path)
        path = workdir / f"model_{self.precision}.tflite"
        facts = self._convert(inputs["onnx"].path, path, reference, workdir)
        prepared = {"facts": facts, "calibration": getattr(self, "_calibration", None)}
        (workdir / PREPARED).write_text(json.dumps(prepared))

    def run(self, inputs: dict, workdir: Path) -> StageOutput:
        from pipeline.reference import Reference

        if not (workdir / PREPARED).is_file():
            self.prepare(inputs, workdir)
        prepared = json.loads((workdir / PREPARED).read_text())
        facts, self._calibration = prepared["facts"], prepared["calibration"]
        reference = Reference.load(inputs["reference"].path)
        path = workdir / f"model_{self.precision}.tflite"
        problems = graph_problems(facts["ops"])
        if problems:
            raise StageError(self.name, "; ".join(problems) + f" (op counts: {facts['ops']})")
        checks = self._check(path, reference)
        mixed = None
        warnings: list[str] = []
        if self.precision == "int8":
            warnings += self._calibration["warnings"]
            method = self.ctx.config.quant.method
            if method != "minmax":
                warnings.append(f"quant_method {method!r} is not available in the TFLite "
                                "converter, which calibrates with min/max ranges; used minmax")
            if checks.failed and self.ctx.config.quant.fallback:
                checks, mixed, warning = self._fall_back(path, reference, checks, workdir)
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
        record = checks.to_record()
        if warnings:
            record["warnings"] = warnings
        info = self._info(facts)
        if self.precision == "int8":
            info["calibration"] = self._calibration
            info["float_compute_ops"] = floats
            if mixed is not None:
                info["mixed_precision"] = mixed
        if self.precision == "fp32" and checks.failed:
            info["onnx2tf_per_op"] = self._per_op(inputs["onnx"].path, reference, workdir)
        record["info"] = info
        meta = {"precision": self.precision, "layout": self.layout}
        return StageOutput({self.outputs[0]: OutputFile(path, "tflite", meta)}, record)

    def _fall_back(self, path: Path, reference: Any, first: Checks,
                   workdir: Path) -> tuple[Checks, dict, str]:
        """Keep the most sensitive layers in float until int8 passes its gates: the converter's
        child ranks the layers (pipeline.int8.search.rank_alone) and writes the candidates from
        the one calibration; pipeline.int8.search.fall_back searches them. The passing model
        replaces ``path``. Returns the checks, the ``mixed_precision`` summary and a warning."""
        import time

        from pipeline.int8.probe import Probe
        from pipeline.int8.search import Ranking, fall_back
        from pipeline.verify import check_gates

        c, quant = self.ctx.config, self.ctx.config.quant
        start = time.perf_counter()
        from targets.tflite import quantize

        # the all-int8 error on the same sample the layers are ranked on (plotted beside them)
        probe = Probe.of(reference).sample(quantize.RANKING_PROBE_INPUTS)
        int8_error = probe.error_of(LiteRTRunner(path, c.threads, self.layout))

        result = self._isolated(f"{quantize.__name__}:mixed_precision_candidates", {
            "calibrated_path": str(workdir / "calibrated.tflite"),
            "probe_path": str(probe.save(workdir / "probe.npz")),
            "out_dir": str(workdir / "mixed"), "layout": self.layout,
            "per_channel": quant.per_channel, "int8_io": self.int8_io,
            "max_float_layers": quant.max_float_layers})
        layers = {layer["tensor"]: layer for layer in result["layers"]}
        candidates = {int(k): Path(v) for k, v in result["candidates"].items()}

        def make(float_layers: list[str]) -> tuple[Path, dict[str, Any]]:
            return candidates[len(float_layers)], {}

        def gate(candidate: Path) -> Checks:
            return check_gates(LiteRTRunner(candidate, c.threads, self.layout), reference,
                               self.ctx.tolerance("int8"), self.ctx.accuracy_drop("int8"))

        checks, summary, warning, _ = fall_back(
            Ranking(int8_error, result["sensitivity"]), make, gate, first=first, path=path,
            recheck=lambda p: self._check(p, reference),
            costs={name: (layer["params"], layer["macs"]) for name, layer in layers.items()},
            cap=quant.max_float_layers, started=start,
            label=lambda name: layer_label(layers[name]))
        summary["layers"] = {name: {**layers[name], "label": layer_label(layers[name])}
                             for name in summary["sensitivity"]}
        summary["ranking_seconds"] = result["seconds"]
        summary["ranking"] = result["ranking"]   # probe inputs and worker processes it used
        return checks, summary, warning

    # -- helpers ---------------------------------------------------------------------------
    def _isolated(self, function: str, kwargs: dict[str, Any]) -> Any:
        from pipeline.isolate import IsolatedCallError, run_isolated

        from targets.tflite import convert

        target = function if ":" in function else f"{convert.__name__}:{function}"
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
                          per_channel=self.ctx.config.quant.per_channel,
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
            from targets.tflite import per_op

            result = self._isolated(f"{per_op.__name__}:compare_per_op", {
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
            # ONNX tensor -> [TF tensor name the TFLite tensors carry, NHWC?] (localisation)
            "tensor_names": facts.get("tensor_names", {}),
            "sidecar": {
                "inputs": [{**t, "layout": detect_layout(t["shape"])} for t in facts["inputs"]],
                "outputs": facts["outputs"],
                "preprocessing": {**asdict(prep), "scale": "pixel / 255, then (x - mean) / std"},
                "labels": labels_for(self.ctx)},
        }


def layer_label(layer: dict[str, Any]) -> str:
    """A weighted layer as people read it: op, position among the weighted layers, output
    shape (e.g. ``CONV_2D #0 (1x64x64x32)``); its tensor name stays in the record."""
    shape = "x".join(str(d) for d in layer.get("output_shape", []))
    return f"{layer['op']} #{layer['index']}" + (f" ({shape})" if shape else "")


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
    """One clear line (the converter's own reason when it raised ConversionError, from the
    child's structured error) plus the output tail."""
    error = exc.error or {}
    if error.get("type") == "ConversionError":
        reason = error["message"].strip()
    else:
        last = exc.tail[-1].strip() if exc.tail else ""
        reason = f"{exc.problem} while converting {model}" + (f": {last[:300]}" if last else "")
    shown = "\n    ".join(exc.tail[-12:]) if exc.tail else "(no output)"
    failure = StageError(stage, f"{reason}\n  last converter output:\n    {shown}")
    failure.reason = reason
    return failure
