"""Run configuration: one pydantic model that the YAML file and the CLI options both fill.

Unknown keys are refused with their names; every CLI option has a key of the same name. The file
is hostile until validated: its size, its YAML (see pipeline.yaml_safe) and every piece of it
quoted in an error message are bounded.
"""
from __future__ import annotations

import reprlib
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, \
    field_validator, model_validator

from pipeline.errors import UserInputError
from pipeline.localise.tolerance import LayerTolerance
from pipeline.parity import Tolerance
from pipeline.yaml_safe import YamlLimitError, safe_load, short

PRECISIONS = ("fp32", "fp16", "int8")
#: Largest config file read; a run configuration is a few kB.
MAX_CONFIG_BYTES = 1 << 20
#: Problems listed in one error message; the rest are counted.
MAX_PROBLEMS = 5

_REPR = reprlib.Repr()  # repr() of input from the user: a few items, a few levels, short strings
_REPR.maxlevel = 2
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = _REPR.maxfrozenset = 4
_REPR.maxstring = _REPR.maxlong = _REPR.maxother = 60


def _bounded(value: Any, limit: int = 60) -> str:
    """repr() of untrusted ``value`` in at most ``limit`` characters, however large it is."""
    return short(_REPR.repr(value), limit)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BenchConfig(_Strict):
    """Latency protocol settings used for every node."""

    warmup: int = Field(10, ge=10)
    runs: int = Field(50, ge=50)
    batch: int = Field(8, ge=1, description="batch size of the throughput measurement")


class ParityConfig(_Strict):
    """Which inputs the parity checks use."""

    n_random: int = Field(4, ge=0)
    seed: int = 0
    max_calib: int = Field(64, ge=1)


DEFAULT_ACCURACY_DROP = {"fp32": 0.0, "fp16": 0.005, "int8": 0.01, "prune": 0.01}


class QuantConfig(_Strict):
    """The one int8 recipe every target's quantizer follows."""

    method: Literal["minmax", "entropy", "percentile"] = "minmax"
    calib_images: int = Field(64, ge=1)
    per_channel: bool = True
    fallback: bool = True
    max_float_layers: int = Field(8, ge=1)


class TensorrtConfig(_Strict):
    """TensorRT engine build settings (the optimisation profile covers the batch dimension)."""

    min_batch: int = Field(1, ge=1)
    opt_batch: int | None = Field(None, ge=1, description="default: bench.batch")
    max_batch: int | None = Field(None, ge=1, description="default: max(bench.batch, opt_batch)")
    workspace_mib: int = Field(2048, ge=64, description="builder workspace memory pool limit")
    optimization_level: int = Field(3, ge=0, le=5, description="builder optimisation level "
                                    "(TensorRT's default 3; 5 searches longest)")

    @model_validator(mode="after")
    def _batch_range(self) -> "TensorrtConfig":
        given = [b for b in (self.min_batch, self.opt_batch, self.max_batch) if b is not None]
        if given != sorted(given):
            raise ValueError(f"tensorrt batches must satisfy min_batch <= opt_batch <= max_batch; "
                             f"got {self.min_batch}, {self.opt_batch}, {self.max_batch}")
        return self


class CoremlConfig(_Strict):
    """Core ML package settings."""

    deployment_target: Literal["iOS15", "iOS16", "iOS17", "iOS18"] = Field(
        "iOS17", description="minimum iOS (iOS16+ for int8, iOS17+ for int8 activations)")
    input_type: Literal["tensor", "image"] = Field(
        "tensor", description="tensor: normalised fp32 NCHW; image: RGB pixels, mean/std "
        "folded into the ImageType")
    int8_activations: bool = Field(False, description="W8A8 instead of weight-only int8")
    compute_units: tuple[Literal["CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE", "ALL"], ...] = Field(
        ("CPU_ONLY", "ALL"), min_length=1,
        description="compute units the macOS check runs MLModel.predict on")


class TrainSettings(_Strict):
    """Fine-tuning settings; each left unset takes the model family's recipe (pipeline.recipe)."""

    lr: float | None = Field(None, gt=0, description="AdamW learning rate")
    batch_size: int | None = Field(None, ge=2, description="training batch size")
    weight_decay: float | None = Field(None, ge=0, description="AdamW weight decay (not on "
                                       "BatchNorm parameters and biases)")
    warmup_epochs: float | None = Field(None, ge=0, description="linear warm-up before the "
                                        "cosine decay, in epochs")
    label_smoothing: float | None = Field(None, ge=0, lt=1, description="cross-entropy label "
                                          "smoothing")
    low_res_scale: float | None = Field(None, gt=0, le=1, description="progressive resizing "
                                        "(zoo models): every epoch but the last trains at this "
                                        "fraction of the input side; 1 turns it off")


#: The zoo model that takes a ``nas:`` section (pipeline.models.nas_space).
NAS_MODEL = "mobilenet_nas"


class NasConfig(_Strict):
    """A point of the ``mobilenet_nas`` search space (the defaults are MobileNetV2's network).

    The allowed values live in pipeline.models.nas_space, imported only when a value is checked
    (it imports torch, which reading a configuration should not need)."""

    depth_multiplier: float = Field(1.0, description="blocks per stage: ceil(n * d); one of "
                                    "0.5, 0.75, 1.0, 1.25")
    kernel_size: int = Field(3, description="depthwise kernel of every block: 3, 5 or 7")
    activation: str = Field("relu6", description="relu6, swish or hard_swish")

    @field_validator("depth_multiplier", mode="before")
    @classmethod
    def _depth(cls, value: Any) -> float:
        from pipeline.models.nas_space import DEPTH_MULTIPLIERS

        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or float(value) not in DEPTH_MULTIPLIERS:
            raise ValueError(f"depth_multiplier must be one of "
                             f"{', '.join(map(str, DEPTH_MULTIPLIERS))}, got {_bounded(value)}")
        return float(value)

    @field_validator("kernel_size", mode="before")
    @classmethod
    def _kernel(cls, value: Any) -> int:
        from pipeline.models.nas_space import KERNEL_SIZES

        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or value not in KERNEL_SIZES:
            raise ValueError(f"kernel_size must be one of "
                             f"{', '.join(map(str, KERNEL_SIZES))}, got {_bounded(value)}")
        return int(value)

    @field_validator("activation", mode="before")
    @classmethod
    def _activation(cls, value: Any) -> str:
        from pipeline.models.nas_space import ACTIVATIONS

        if not isinstance(value, str) or value not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, "
                             f"got {_bounded(value)}")
        return value


class PipelineConfig(_Strict):
    model: str = "mobilenet_v2"
    weights: Path | None = None
    width: float = Field(1.0, gt=0)
    resolution: int = Field(224, ge=1)
    num_classes: int = Field(1000, ge=1)
    nas: NasConfig | None = Field(None, description="the search-space point of model "
                                  "mobilenet_nas: depth_multiplier, kernel_size, activation")
    targets: tuple[str, ...] = ("onnx",)
    precisions: tuple[str, ...] = ("fp32",)
    calib: Path | None = None
    out: Path | None = None
    artifacts_dir: Path = Path("artifacts")
    force: tuple[str, ...] = ()
    threads: int = Field(1, ge=1)
    mean: tuple[float, float, float] | None = Field(None, description="per-channel RGB mean of "
                                                    "the model's input normalisation (0-1 scale)")
    std: tuple[float, float, float] | None = Field(None, description="per-channel RGB std")
    latency_budget_ms: float | None = Field(None, gt=0, description="a latency gate: every "
                                            "deployment node's batch-1 median must be within it "
                                            "(pipeline.latency_budget)")
    opset: int = Field(18, ge=13)
    dataset: Literal["digits"] | None = Field(None, description="built-in labelled dataset "
                                              "for evaluation, calibration and fine-tuning")
    eval: Path | None = Field(None, description="labelled image folder root/<class>/<image>")
    finetune_epochs: int = Field(0, ge=0)
    train_dir: Path | None = Field(None, description="labelled folder to fine-tune on")
    min_accuracy: float | None = Field(None, ge=0, le=1, description="gate on the fine-tuned "
                                       "model's held-out accuracy")
    prune: float | None = Field(None, description="pruning ratio in (0, 1)")
    prune_mode: Literal["structured", "unstructured"] = "structured"
    prune_scope: Literal["uniform", "global"] = "uniform"
    distill: bool = Field(False, description="recover a pruned model by distillation")
    distill_epochs: int = Field(3, ge=1)
    quant_method: Literal["minmax", "entropy", "percentile"] = "minmax"
    calib_images: int = Field(64, ge=1)
    int8_fallback: bool = Field(True, description="when int8 fails its gates, keep the most "
                                "sensitive layers in float until they pass")
    int8_max_float_layers: int = Field(8, ge=1, description="most layers the int8 fallback "
                                       "may keep in float")
    accuracy_gates: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_ACCURACY_DROP),
                                             description="largest accuracy drop (fraction)")
    tflite_layout: Literal["NHWC", "NCHW"] = Field("NHWC", description="input layout of the "
                                                   ".tflite artifacts (NHWC: Android convention)")
    tflite_int8_io: bool = Field(False, description="int8 model takes/returns int8 tensors")
    labels: str | None = Field(None, description="class names: a text file with one name per "
                               "line, or 'dataset' for the evaluation set's own names")
    convert_timeout_s: int = Field(900, ge=1, description="limit for each isolated converter call")
    bench: BenchConfig = BenchConfig()
    tensorrt: TensorrtConfig = TensorrtConfig()
    coreml: CoremlConfig = CoremlConfig()
    train: TrainSettings = TrainSettings()
    parity: ParityConfig = ParityConfig()
    tolerances: dict[str, Tolerance] = Field(default_factory=dict)
    #: per-precision limits of one layer's tensor for localisation (pipeline.localise)
    layer_tolerances: dict[str, LayerTolerance] = Field(default_factory=dict)
    localise: Literal["failed", "all", "off"] = Field(
        "failed", description="which nodes a run localises layer by layer: those that fail "
        "their gate, every verified node (the HTML plot then shows every format's drift), none")

    @field_validator("targets", "precisions", "force", "mean", "std", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        """``targets: onnx,tflite`` in YAML means what ``--targets onnx,tflite`` does."""
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        return value

    @field_validator("std")
    @classmethod
    def _positive_std(cls, value: tuple[float, ...] | None) -> tuple[float, ...] | None:
        if value is not None and not all(v > 0 for v in value):
            raise ValueError(f"every std must be > 0, got {list(value)}")
        return value

    @field_validator("nas")
    @classmethod
    def _nas_model(cls, value: NasConfig | None, info: ValidationInfo) -> NasConfig | None:
        model = info.data.get("model")
        if value is not None and model != NAS_MODEL:
            raise ValueError(f"the nas section is only for model {NAS_MODEL}, not "
                             f"{_bounded(model)}; drop nas or pass model {NAS_MODEL}")
        return value

    @field_validator("targets")
    @classmethod
    def _known_targets(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from targets.base import target_names

        known = target_names()
        unknown = [t for t in value if t not in known]
        if unknown:
            raise ValueError(f"unknown target(s) {_bounded(unknown, 200)}; "
                             f"available: {sorted(known)}")
        if not value:
            raise ValueError("at least one target is needed")
        return value

    @field_validator("precisions")
    @classmethod
    def _known_precisions(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [p for p in value if p not in PRECISIONS]
        if unknown:
            raise ValueError(f"unknown precision(s) {_bounded(unknown, 200)}; "
                             f"available: {list(PRECISIONS)}")
        return value

    @field_validator("tolerances", "layer_tolerances")
    @classmethod
    def _tolerance_keys(cls, value: dict[str, Tolerance]) -> dict[str, Tolerance]:
        known = list(PRECISIONS) + ["prune"]
        unknown = [p for p in value if p not in known]
        if unknown:
            raise ValueError(f"tolerances for unknown precision(s) {_bounded(unknown, 200)}; "
                             f"use {known}")
        return value

    @field_validator("prune")
    @classmethod
    def _prune_ratio(cls, value: float | None) -> float | None:
        if value is not None and not 0 < value < 1:
            raise ValueError(f"pruning ratio {value} is outside (0, 1); pass e.g. --prune 0.3 "
                             "to remove 30 % of the channels")
        return value

    @property
    def quant(self) -> QuantConfig:
        return QuantConfig(method=self.quant_method, calib_images=self.calib_images,
                           fallback=self.int8_fallback,
                           max_float_layers=self.int8_max_float_layers)

    @property
    def cache_dir(self) -> Path:
        return self.artifacts_dir / "cache"


def _section_keys(loc: tuple[Any, ...]) -> list[str]:
    """The keys valid next to the one at ``loc`` (e.g. bench's keys for ``bench.rnus``)."""
    model: type[BaseModel] = PipelineConfig
    parts = list(loc[:-1])
    while parts:
        field = model.model_fields.get(str(parts.pop(0)))
        if field is None:
            break
        annotation = field.annotation
        if get_origin(annotation) is dict:  # e.g. tolerances: {precision: Tolerance}
            annotation = get_args(annotation)[1]
            if parts:
                parts.pop(0)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            break
        model = annotation
    return list(model.model_fields)


def _format_validation_error(exc: ValidationError, source: str,
                             from_cli: frozenset[str] = frozenset(), api: bool = False) -> str:
    problems = []
    listed: set[str] = set()  # each section's valid keys are listed once
    errors = exc.errors(include_url=False)
    for err in errors[:MAX_PROBLEMS]:
        loc = tuple(err["loc"])
        where = short(".".join(short(str(p), 40) for p in loc), 120) or "(top level)"
        if loc and len(loc) == 1 and loc[0] in from_cli:   # as the caller spelled it
            where = f"{loc[0]}=" if api else "--" + str(loc[0]).replace("_", "-")
        else:
            where = f"'{where}'"
        if err["type"] == "extra_forbidden":
            valid = ", ".join(_section_keys(loc))
            hint = "" if valid in listed else f" (valid keys here: {valid})"
            listed.add(valid)
            problems.append(f"unknown key {where}{hint}")
        elif err["type"] == "value_error" and "error" in err.get("ctx", {}):
            problems.append(f"{where}: {short(str(err['ctx']['error']), 400)}")
        else:
            problems.append(f"{where}: {short(err['msg'], 200)} (got {_bounded(err.get('input'))})")
    if len(errors) > MAX_PROBLEMS:
        problems.append(f"and {len(errors) - MAX_PROBLEMS} more problem(s)")
    return f"invalid configuration in {source}: {'; '.join(problems)}"


def load_config(path: Path | None, overrides: dict[str, Any], *,
                api: bool = False) -> PipelineConfig:
    """Merge a YAML file (if any) with CLI overrides (which win) into a validated config;
    ``api``: the overrides are export()'s keyword arguments (so errors name them so)."""
    data: dict[str, Any] = {}
    options = "export() options" if api else "command-line options"
    source = options
    if path is not None:
        source = str(path)
        if not Path(path).is_file():
            raise UserInputError(f"config file {path} does not exist; pass an existing YAML file")
        try:
            with open(path, "rb") as stream:
                raw = stream.read(MAX_CONFIG_BYTES + 1)
            if len(raw) > MAX_CONFIG_BYTES:
                cap = (f"{MAX_CONFIG_BYTES >> 20} MiB" if MAX_CONFIG_BYTES % (1 << 20) == 0
                       else f"{MAX_CONFIG_BYTES} bytes")
                raise UserInputError(f"config file {path} is larger than the {cap} limit for a "
                                     "configuration; pass the run's YAML file (a few kB)")
            loaded = safe_load(raw.decode("utf-8")) or {}
        except YamlLimitError as exc:
            raise UserInputError(f"config file {path} {exc}") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or (str(exc).splitlines() or [""])[0]
            raise UserInputError(f"config file {path} is not valid YAML{where}: "
                                 f"{short(problem, 200)}; fix the syntax there") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise UserInputError(f"config file {path} cannot be read as UTF-8 text "
                                 f"({type(exc).__name__}); pass a YAML file") from None
        if not isinstance(loaded, dict):
            raise UserInputError(f"config file {path} must be a mapping of keys to values, "
                                 f"not a {type(loaded).__name__}")
        data.update(loaded)
    cli = {k: v for k, v in overrides.items() if v is not None and v != {}}
    for key, value in cli.items():   # a section's options join the file's section
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    if path is not None and cli:
        source = f"{path} and the {options}"
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        raise UserInputError(_format_validation_error(exc, source, frozenset(cli), api)) from None
