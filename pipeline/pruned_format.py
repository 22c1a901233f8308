"""A pickle-free file format for structurally pruned zoo models.

A pruned model no longer matches its zoo spec, so :func:`save_pruned` stores the ``state_dict``
as safetensors (canonical bytes) with the channel configuration of every Conv2d / BatchNorm2d /
Linear in the file's metadata, and :func:`load_pruned` rebuilds the zoo model from its spec,
swaps in correctly shaped layers and loads the weights with ``strict=True``. Nothing is pickled
(torch-pruning's own ``tp.state_dict`` copies each module's ``__dict__`` and needs pickle to save).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping

from safetensors import safe_open
from safetensors.torch import load_file, save
from torch import nn

from pipeline.errors import UserInputError
from pipeline.models.registry import ModelSpec, build
from pipeline.safetensors_io import write_canonical

#: ``format`` entry of the safetensors metadata written by :func:`save_pruned`.
PRUNED_FORMAT = "mobile-export/pruned-model/1"


def channel_config(model: nn.Module) -> dict[str, dict[str, Any]]:
    """Shape-defining attributes of every Conv2d / BatchNorm2d / Linear, by qualified name."""
    config: dict[str, dict[str, Any]] = {}
    for name, m in model.named_modules():
        if type(m) is nn.Conv2d:
            config[name] = {
                "type": "Conv2d",
                "in_channels": m.in_channels,
                "out_channels": m.out_channels,
                "groups": m.groups,
            }
        elif type(m) is nn.BatchNorm2d:
            config[name] = {"type": "BatchNorm2d", "num_features": m.num_features}
        elif type(m) is nn.Linear:
            config[name] = {
                "type": "Linear",
                "in_features": m.in_features,
                "out_features": m.out_features,
            }
    return config


def save_pruned(
    model: nn.Module, path: str | os.PathLike[str], spec: ModelSpec | None = None
) -> Path:
    """Write ``model``'s ``state_dict`` to ``path`` as safetensors, with its channel configuration
    (and ``spec``, when given) in the metadata. Written to a temporary file, then renamed."""
    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {
        "format": PRUNED_FORMAT,
        "layers": json.dumps(channel_config(model), sort_keys=True),
    }
    if spec is not None:
        metadata["spec"] = json.dumps(asdict(spec), sort_keys=True)
    write_canonical(save(tensors, metadata=metadata), path)
    return path


def _read_metadata(path: Path) -> dict[str, str]:
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except FileNotFoundError:
        raise UserInputError(f"pruned model not found: {path}") from None
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise UserInputError(f"{path} is not a readable safetensors file: {exc}") from exc


def _replacement(old: nn.Module, entry: Mapping[str, Any], name: str) -> nn.Module:
    kind = entry.get("type")
    if kind == "Conv2d" and type(old) is nn.Conv2d:
        return nn.Conv2d(
            int(entry["in_channels"]),
            int(entry["out_channels"]),
            kernel_size=old.kernel_size,  # type: ignore[arg-type]
            stride=old.stride,  # type: ignore[arg-type]
            padding=old.padding,  # type: ignore[arg-type]
            dilation=old.dilation,  # type: ignore[arg-type]
            groups=int(entry["groups"]),
            bias=old.bias is not None,
            padding_mode=old.padding_mode,
        )
    if kind == "BatchNorm2d" and type(old) is nn.BatchNorm2d:
        return nn.BatchNorm2d(
            int(entry["num_features"]),
            eps=old.eps,
            momentum=old.momentum,  # type: ignore[arg-type]
            affine=old.affine,
            track_running_stats=old.track_running_stats,
        )
    if kind == "Linear" and type(old) is nn.Linear:
        return nn.Linear(
            int(entry["in_features"]), int(entry["out_features"]), bias=old.bias is not None
        )
    raise UserInputError(
        f"layer {name!r} was saved as {kind} but the model spec builds a {type(old).__name__} there"
    )


def load_pruned(path: str | os.PathLike[str], spec: ModelSpec) -> nn.Module:
    """Rebuild a model saved by :func:`save_pruned`: build ``spec`` from the zoo, replace every
    Conv2d / BatchNorm2d / Linear by one shaped as saved, and load the weights (``strict=True``).
    Returns the model in eval mode. Raises :class:`UserInputError` when the file is not a pruned
    model, or was saved from a different architecture or spec."""
    path = Path(path)
    meta = _read_metadata(path)
    if meta.get("format") != PRUNED_FORMAT:
        raise UserInputError(
            f"{path} is not a pruned model saved by mobile-export "
            f"(metadata format {meta.get('format')!r}, expected {PRUNED_FORMAT!r})"
        )
    if "spec" in meta:
        saved = json.loads(meta["spec"])
        # Files pruned before ModelSpec gained ``nas`` have no such key: they are non-NAS specs.
        if isinstance(saved, dict):
            saved.setdefault("nas", None)
        if saved != json.loads(json.dumps(asdict(spec))):
            raise UserInputError(f"{path} was pruned from {saved}, not from {asdict(spec)}")
    layers: dict[str, dict[str, Any]] = json.loads(meta["layers"])

    model = build(spec)
    current = channel_config(model)
    if set(current) != set(layers):
        missing = sorted(set(current) ^ set(layers))[:5]
        raise UserInputError(
            f"{path} does not match the layers of {spec.label} (differing layers: {missing})"
        )
    for name, entry in layers.items():
        if entry == current[name]:
            continue
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, _replacement(getattr(parent, child), entry, name))

    state = load_file(str(path))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise UserInputError(f"{path} does not load into the rebuilt {spec.label}: {exc}") from exc
    return model.eval()
