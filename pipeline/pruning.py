"""Structured and unstructured pruning of the zoo models, and a pickle-free format for the result.

Two modes, reported honestly:

* **structured** (default): torch-pruning's dependency graph removes whole channels, so the pruned
  network is a smaller dense network — fewer parameters, fewer MACs, and faster on every runtime.
  The graph keeps every coupled layer consistent: a depthwise conv loses exactly the channels its
  producer loses (``groups`` stays equal to its channel count), both sides of a residual add lose
  the same channels, and the BatchNorm / SE layers in between follow. Remaining channel counts are
  rounded down to multiples of 8 (``round_to=8``), the vector width mobile kernels like.
* **unstructured**: the seed's magnitude pruning (``torch.nn.utils.prune``): individual weights are
  set to zero. Sparsity goes up, but the tensors keep their shapes, so parameters, MACs and the
  latency of the dense kernels of ONNX Runtime / LiteRT / Core ML / TensorRT do not change.

Protected layers are never changed at all — neither their output nor their input channels: the
stem convolution (the first ``Conv2d``), the classifier (the last ``Linear``), and every module
whose qualified name matches an entry of :attr:`PruneConfig.protect`. Keeping a layer's *input*
intact means the layer that feeds it keeps its output channels too (for the classifier of
MobileNetV2: the last 1×1 conv keeps its 1280 channels).

A structurally pruned model no longer matches its zoo spec, so ``save_pruned``
(pipeline.pruned_format) stores the
``state_dict`` as safetensors with the channel configuration of every Conv2d / BatchNorm2d / Linear
in the file's metadata, and :func:`load_pruned` rebuilds the zoo model from its spec, swaps in
correctly shaped layers and loads the weights with ``strict=True``. Nothing is pickled
(torch-pruning's own ``tp.state_dict`` copies each module's ``__dict__`` and needs pickle to save).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Mapping

import torch
import torch_pruning as tp
from torch import Tensor, nn
from torch.nn.utils import prune as torch_prune

from pipeline.errors import UserInputError
from pipeline.pruning_protect import protected_modules, protected_names
from pipeline.models.counting import count_macs, count_params

__all__ = [
    "PruneConfig",
    "PruneSummary",
    "ROUND_TO",
    "protected_modules",
    "protected_names",
    "prune",
    "prune_structured",
    "prune_unstructured",
    "weight_sparsity",
]

#: Remaining channel counts of structurally pruned layers are multiples of this.
ROUND_TO = 8

Mode = Literal["structured", "unstructured"]
Scope = Literal["global", "uniform"]
_MODES = ("structured", "unstructured")
_SCOPES = ("global", "uniform")
#: importance name → p of torch-pruning's ``MagnitudeImportance`` (L1 / L2 norm of a channel).
_IMPORTANCES = {"l1": 1, "magnitude": 1, "l2": 2}
_PRUNABLE = (nn.Conv2d, nn.Linear)


@dataclass(frozen=True)
class PruneConfig:
    """How to prune.

    ``ratio``: fraction of channels (structured) or of weights (unstructured) to remove, in (0, 1).
    ``scope``: ``"uniform"`` removes ``ratio`` of every prunable layer's channels (weights);
    ``"global"`` ranks all of them together, so unimportant layers lose more than important ones.
    ``importance``: ``"l1"`` (= ``"magnitude"``) or ``"l2"`` norm of a channel's weights
    (structured); unstructured pruning always ranks single weights by magnitude.
    ``protect``: extra modules to leave untouched, as qualified names or ``fnmatch`` patterns
    (``"features.1"``, ``"features.1*.conv.*"``); the stem and the classifier are always protected.
    """

    ratio: float
    mode: Mode = "structured"
    scope: Scope = "uniform"
    importance: str = "l1"
    protect: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        ratio = self.ratio
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)):
            raise UserInputError(
                f"pruning ratio must be a number in the open interval (0, 1), got {ratio!r}"
            )
        if not (0.0 < float(ratio) < 1.0):  # also rejects NaN
            raise UserInputError(
                f"pruning ratio must be in the open interval (0, 1) — the fraction of channels "
                f"or weights to remove — got {ratio!r}"
            )
        object.__setattr__(self, "ratio", float(ratio))
        if self.mode not in _MODES:
            raise UserInputError(
                f"pruning mode must be one of {', '.join(_MODES)}, got {self.mode!r}"
            )
        if self.scope not in _SCOPES:
            raise UserInputError(
                f"pruning scope must be one of {', '.join(_SCOPES)}, got {self.scope!r}"
            )
        if self.importance not in _IMPORTANCES:
            raise UserInputError(
                f"pruning importance must be one of {', '.join(_IMPORTANCES)}, "
                f"got {self.importance!r}"
            )
        protect = self.protect
        if isinstance(protect, str):
            protect = (protect,)
        protect = tuple(protect)
        if not all(isinstance(p, str) and p for p in protect):
            raise UserInputError(
                f"protect must be a list of module names or patterns, got {self.protect!r}"
            )
        object.__setattr__(self, "protect", protect)


@dataclass(frozen=True)
class PruneSummary:
    """What pruning did to one model.

    ``sparsity``: fraction of exactly-zero weights over the prunable (unprotected Conv2d/Linear)
    weights after pruning. ``channels_removed``: output channels removed, summed over all Conv2d
    and Linear layers (0 for unstructured pruning). ``layers``: for each layer whose output
    channels changed, ``(before, after)``. MACs are per image at the example input's resolution,
    counted by :func:`pipeline.models.counting.count_macs`; ``None`` when no resolution was given.
    """

    mode: str
    ratio: float
    scope: str
    params_before: int
    params_after: int
    macs_before: int | None
    macs_after: int | None
    channels_removed: int
    sparsity: float
    protected: tuple[str, ...]
    note: str
    layers: Mapping[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def params_fraction(self) -> float:
        """params_after / params_before."""
        return self.params_after / self.params_before

    @property
    def macs_fraction(self) -> float | None:
        """macs_after / macs_before (None when MACs were not counted)."""
        if self.macs_before is None or self.macs_after is None:
            return None
        return self.macs_after / self.macs_before

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["protected"] = list(self.protected)
        data["layers"] = {name: list(pair) for name, pair in self.layers.items()}
        return data


def _protected_leaves(protected: list[nn.Module]) -> list[nn.Module]:
    """The Conv2d / Linear layers inside the protected modules (each once)."""
    seen: dict[int, nn.Module] = {}
    for module in protected:
        for m in module.modules():
            if isinstance(m, _PRUNABLE):
                seen.setdefault(id(m), m)
    return list(seen.values())


def _producers_of_inputs(graph: tp.DependencyGraph, layers: list[nn.Module]) -> list[nn.Module]:
    """Layers whose output channels feed the inputs of ``layers`` (through BN, activations, adds,
    pooling, reshapes): ignoring them too keeps the protected layers' input width unchanged."""
    producers: dict[int, nn.Module] = {}
    for layer in layers:
        if layer not in graph.module2node:
            continue
        pruner = graph.get_pruner_of_module(layer)
        if pruner is None or not graph.get_in_channels(layer):
            continue
        group = graph.get_pruning_group(layer, pruner.prune_in_channels, [0])
        for dep, _ in group:
            target = dep.target.module
            if graph.is_out_channel_pruning_fn(dep.handler) and isinstance(target, nn.Module):
                producers.setdefault(id(target), target)
    return list(producers.values())


# ---------------------------------------------------------------------------------------------
# Measuring


def _prunable_layers(
    model: nn.Module, protected: list[nn.Module]
) -> list[tuple[str, nn.Conv2d | nn.Linear]]:
    skip = {id(m) for m in _protected_leaves(protected)}
    return [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, _PRUNABLE) and id(m) not in skip
    ]


def weight_sparsity(model: nn.Module, protect: tuple[str, ...] = ()) -> float:
    """Fraction of exactly-zero weights over the model's unprotected Conv2d/Linear weights."""
    layers = _prunable_layers(model, protected_modules(model, protect))
    total = sum(m.weight.numel() for _, m in layers)
    zeros = sum(int((m.weight == 0).sum()) for _, m in layers)
    return zeros / total if total else 0.0


def _out_channels(model: nn.Module) -> dict[str, int]:
    out: dict[str, int] = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            out[name] = m.out_channels
        elif isinstance(m, nn.Linear):
            out[name] = m.out_features
    return out


def _resolution(example_input: Tensor) -> int:
    if example_input.dim() != 4 or example_input.shape[-1] != example_input.shape[-2]:
        raise UserInputError(
            "the example input must be one square image batch N×C×R×R, "
            f"got shape {tuple(example_input.shape)}"
        )
    return int(example_input.shape[-1])


def _macs(model: nn.Module, example_input: Tensor | None) -> int | None:
    if example_input is None:
        return None
    return count_macs(model, _resolution(example_input), in_channels=int(example_input.shape[1]))


# ---------------------------------------------------------------------------------------------
# Pruning


def prune(model: nn.Module, example_input: Tensor | None, cfg: PruneConfig) -> PruneSummary:
    """Prune ``model`` in place as ``cfg.mode`` says (structured needs ``example_input``)."""
    if cfg.mode == "structured":
        if example_input is None:
            raise UserInputError("structured pruning needs an example input to trace the model")
        return prune_structured(model, example_input, cfg)
    return prune_unstructured(model, cfg, example_input=example_input)


def prune_structured(model: nn.Module, example_input: Tensor, cfg: PruneConfig) -> PruneSummary:
    """Remove ``cfg.ratio`` of the channels of ``model`` in place (torch-pruning's dep. graph).

    ``example_input`` (e.g. ``torch.zeros(1, 3, R, R)``) is used to trace the graph and to count
    MACs. ``scope="uniform"`` prunes every channel group by ``ratio``; ``"global"`` ranks channels
    across groups. Channel counts left are rounded *down* to multiples of :data:`ROUND_TO`, so a
    small layer can lose more than ``ratio`` (30 %: 16 → 8, 24 → 16, 96 → 64); a group too small
    to keep one full multiple is left alone. The model's train/eval mode is preserved; pruning
    runs in eval mode so BatchNorm statistics are not updated by the tracing pass.
    """
    if cfg.mode != "structured":
        raise UserInputError(f"prune_structured called with mode {cfg.mode!r}")
    example = example_input.detach()
    _resolution(example)
    protected = protected_modules(model, cfg.protect)
    names = protected_names(model, cfg.protect)
    params_before, macs_before = count_params(model), _macs(model, example)
    channels_before = _out_channels(model)

    was_training = model.training
    model.eval()
    try:
        pruner = tp.pruner.BasePruner(
            model,
            example,
            importance=tp.importance.MagnitudeImportance(p=_IMPORTANCES[cfg.importance]),
            pruning_ratio=cfg.ratio,
            global_pruning=cfg.scope == "global",
            ignored_layers=protected,
            round_to=ROUND_TO,
            # torch-pruning 1.6 uses mutable dict defaults that it writes into; fresh ones keep
            # one call from leaking modules into the next.
            in_channel_groups={},
            out_channel_groups={},
        )
        # Keep the protected layers' inputs too: ignore the layers feeding them. Found on the
        # pruner's own graph (tracing twice doubles the cost); the groups to rank are chosen
        # from ``ignored_layers`` in ``step()``, so extending it before the step is enough.
        for producer in _producers_of_inputs(pruner.DG, _protected_leaves(protected)):
            pruner.ignored_layers.extend(producer.modules())
        pruner.step()
        del pruner
    finally:
        model.train(was_training)

    channels_after = _out_channels(model)
    changed = {
        name: (channels_before[name], channels_after[name])
        for name in channels_before
        if channels_before[name] != channels_after.get(name)
    }
    removed = sum(before - after for before, after in changed.values())
    params_after, macs_after = count_params(model), _macs(model, example)
    note = (
        f"structured ({cfg.scope}, {cfg.importance}): removed {removed} channels; params "
        f"{params_before:,} -> {params_after:,}"
    )
    if macs_before is not None and macs_after is not None:
        note += f", MACs {macs_before:,} -> {macs_after:,}"
    return PruneSummary(
        mode="structured",
        ratio=cfg.ratio,
        scope=cfg.scope,
        params_before=params_before,
        params_after=params_after,
        macs_before=macs_before,
        macs_after=macs_after,
        channels_removed=removed,
        sparsity=weight_sparsity(model, cfg.protect),
        protected=tuple(names),
        note=note,
        layers=changed,
    )


def prune_unstructured(
    model: nn.Module, cfg: PruneConfig, example_input: Tensor | None = None
) -> PruneSummary:
    """Zero ``cfg.ratio`` of the unprotected Conv2d/Linear weights by magnitude, in place.

    ``scope="uniform"``: ``ratio`` of each layer's weights (``l1_unstructured`` per layer);
    ``"global"``: the smallest ``ratio`` of all of them together (``global_unstructured``). The
    masks are made permanent (``prune.remove``), so the model has plain parameters again. Shapes,
    parameter count and MACs do not change (``example_input`` only sets the resolution at which
    MACs are reported) — dense kernels run exactly as fast as before.
    """
    if cfg.mode != "unstructured":
        raise UserInputError(f"prune_unstructured called with mode {cfg.mode!r}")
    protected = protected_modules(model, cfg.protect)
    names = protected_names(model, cfg.protect)
    layers = _prunable_layers(model, protected)
    if not layers:
        raise UserInputError("nothing to prune: every Conv2d/Linear layer is protected")
    params_before, macs_before = count_params(model), _macs(model, example_input)

    with torch.no_grad():
        if cfg.scope == "global":
            torch_prune.global_unstructured(
                [(m, "weight") for _, m in layers],
                pruning_method=torch_prune.L1Unstructured,
                amount=cfg.ratio,
            )
        else:
            for _, m in layers:
                torch_prune.l1_unstructured(m, "weight", amount=cfg.ratio)
        for _, m in layers:
            torch_prune.remove(m, "weight")

    sparsity = weight_sparsity(model, cfg.protect)
    params_after, macs_after = count_params(model), _macs(model, example_input)
    return PruneSummary(
        mode="unstructured",
        ratio=cfg.ratio,
        scope=cfg.scope,
        params_before=params_before,
        params_after=params_after,
        macs_before=macs_before,
        macs_after=macs_after,
        channels_removed=0,
        sparsity=sparsity,
        protected=tuple(names),
        note=(
            f"unstructured ({cfg.scope}): {sparsity:.1%} of the prunable weights are zero; "
            "parameter count, MACs and tensor shapes are unchanged, so dense runtimes run no "
            "faster (only sparse kernels or compression would benefit)"
        ),
    )
