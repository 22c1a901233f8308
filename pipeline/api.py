"""The Python API: ``from pipeline import export``; the CLI's ``run`` is a thin caller of it.

``export(model, targets=[...], precisions=[...], **options)`` runs the same pipeline as
``mobile-export run``: ``model`` is an ``nn.Module`` object in memory, a zoo name, or a
``file.py:factory`` / ``package.module:factory`` string; the options are the CLI's (the config
file's keys, and the CLI's flat names for nested ones such as ``lr`` or
``coreml_deployment_target``). It returns an :class:`ExportResult` and raises the typed errors
of :mod:`pipeline.errors` that the CLI turns into exit code 2.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from pipeline.errors import UserInputError

#: CLI option -> (config section, key): the flat names the CLI takes for nested settings
NESTED_OPTIONS = {
    "lr": ("train", "lr"), "batch_size": ("train", "batch_size"),
    "weight_decay": ("train", "weight_decay"), "warmup_epochs": ("train", "warmup_epochs"),
    "coreml_deployment_target": ("coreml", "deployment_target"),
    "coreml_input_type": ("coreml", "input_type"),
    "coreml_compute_units": ("coreml", "compute_units"),
}
#: CLI option -> config key where the two are spelled differently
RENAMED_OPTIONS = {"out_dir": "out", "eval_dir": "eval"}


def config_overrides(options: Mapping[str, Any]) -> dict[str, Any]:
    """The CLI's (or export()'s) options as config keys: flat names go into their sections,
    lists become tuples, unset (None) options are left out."""
    overrides: dict[str, Any] = {}
    for name, value in options.items():
        if value is None:
            continue
        if isinstance(value, list):
            value = tuple(value)
        if name in NESTED_OPTIONS:
            section, key = NESTED_OPTIONS[name]
            overrides.setdefault(section, {})[key] = value
        else:
            overrides[RENAMED_OPTIONS.get(name, name)] = value
    return overrides


@dataclass(frozen=True)
class ExportedNode:
    """One node of the run, typed (the report's entry stays in ``entry``)."""

    name: str
    stage: str
    target: str
    precision: str
    status: str                   # ran, cached, failed, skipped, unavailable
    verdict: str                  # pass, fail, unverified
    reason: str | None
    artifact: Path | None         # the published file (or the cached one when not published)
    parity: Mapping[str, Any]
    accuracy: Mapping[str, Any] | None
    latency: Mapping[str, Any] | None
    error: str | None
    entry: Mapping[str, Any] = field(repr=False)

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"

    @property
    def cached(self) -> bool:
        return self.status == "cached"

    @classmethod
    def from_entry(cls, entry: Mapping[str, Any]) -> ExportedNode:
        parity = entry.get("parity") or {}
        artifact = (entry.get("artifact") or {}).get("path")
        return cls(name=entry["name"], stage=entry["stage"], target=entry["target"],
                   precision=entry["precision"], status=entry["status"],
                   verdict=parity.get("verdict", "unverified"), reason=parity.get("reason"),
                   artifact=Path(artifact) if artifact else None, parity=parity,
                   accuracy=entry.get("accuracy"), latency=entry.get("latency"),
                   error=entry.get("error"), entry=entry)


@dataclass(frozen=True)
class ExportResult:
    """What a run produced: the exit code the CLI would return, the nodes, the published
    artifacts (``artifacts["tflite"]["int8"]``) and the report."""

    exit_code: int
    nodes: tuple[ExportedNode, ...]
    artifacts: Mapping[str, Mapping[str, Path]]
    report_path: Path
    report: Mapping[str, Any] = field(repr=False)

    @property
    def passed(self) -> bool:
        """Every node passed its gates and every target could be built (exit code 0)."""
        return self.exit_code == 0

    def node(self, name: str) -> ExportedNode:
        """The node called ``name`` (e.g. ``tflite:int8``)."""
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(f"no node {name!r} in this run; nodes: {[n.name for n in self.nodes]}")


def run_config(config: Any, progress: Any = None) -> tuple[ExportResult, Any]:
    """Run a validated :class:`pipeline.config.PipelineConfig`; returns the typed result and
    the run's outcome (for the CLI, which prints from it)."""
    from pipeline.run import execute

    outcome = execute(config, progress)
    nodes = tuple(ExportedNode.from_entry(entry) for entry in outcome.report["nodes"])
    artifacts: dict[str, dict[str, Path]] = {}
    for node in nodes:
        if node.name in outcome.published:
            artifacts.setdefault(node.target, {})[node.precision] = outcome.published[node.name]
    result = ExportResult(outcome.exit_code, nodes, artifacts, outcome.out_dir / "report.json",
                          outcome.report)
    return result, outcome


def export(model: Any, *, targets: Sequence[str] | None = None,
           precisions: Sequence[str] | None = None, calib: str | Path | None = None,
           example_input: Any = None, config: str | Path | None = None,
           progress: Any = None, **options: Any) -> ExportResult:
    """Convert ``model`` to every target, check each node against the reference, publish what
    passes, write the report (see the module doc). ``example_input``: a tensor or array of
    shape (N, 3, H, W), H == W, that sets the resolution (needed for a module unless
    ``resolution=`` is given). ``config``: a YAML file whose values the options override.
    ``progress``: a callable (node name, status, seconds), as the CLI's display."""
    from pipeline.config import load_config

    overrides = config_overrides({**options, "targets": targets, "precisions": precisions,
                                  "calib": calib})
    if example_input is not None:
        side = _side_of(example_input)
        if overrides.setdefault("resolution", side) != side:
            raise UserInputError(f"example_input is {side}x{side} but resolution="
                                 f"{overrides['resolution']}; pass one or make them agree")
    overrides["model"] = _model_ref(model, overrides)
    cfg = load_config(Path(config) if config is not None else None, overrides, api=True)
    return run_config(cfg, progress)[0]


def _model_ref(model: Any, overrides: dict[str, Any]) -> str:
    """The config's ``model`` for what export() was given (registering a module)."""
    from torch import nn

    if isinstance(model, (str, Path)):   # a zoo name, a factory, or an .onnx file
        return str(model)
    if not isinstance(model, nn.Module):
        raise UserInputError(f"export() takes a torch.nn.Module, a zoo name or a "
                             f"file.py:factory string, not a {type(model).__name__}")
    from pipeline import memory_model

    if "resolution" not in overrides:
        raise UserInputError("export(module) needs the input size: pass example_input="
                             "torch.zeros(1, 3, H, W) or resolution=H")
    if "num_classes" not in overrides:
        overrides["num_classes"] = _classes_of(model, int(overrides["resolution"]))
    return memory_model.register(model)


def _side_of(example: Any) -> int:
    shape = tuple(int(d) for d in getattr(example, "shape", ()))
    if len(shape) != 4 or shape[1] != 3 or shape[2] != shape[3] or shape[2] < 1:
        raise UserInputError(f"example_input must have shape (N, 3, H, W) with H == W (a "
                             f"square RGB image batch), got {list(shape) or type(example).__name__}")
    return shape[2]


def _classes_of(model: Any, resolution: int) -> int:
    """The module's number of outputs per image, from one forward on zeros (on a copy)."""
    import copy

    import torch

    try:
        with torch.inference_mode():
            logits = copy.deepcopy(model).eval()(torch.zeros(1, 3, resolution, resolution))
    except Exception as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise UserInputError(f"the model cannot take a 1x3x{resolution}x{resolution} input "
                             f"({first}); pass an example_input it accepts") from None
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
        raise UserInputError("the model must return one (N, classes) tensor of logits, got "
                             f"{getattr(logits, 'shape', type(logits).__name__)}; pass "
                             "num_classes= if it returns something else")
    return int(logits.shape[1])
