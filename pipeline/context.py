"""What every stage of one run shares: the validated config and the resolved model source."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from pipeline.artifact import sha256_file
from pipeline.config import PipelineConfig
from pipeline.data import list_images
from pipeline.model_source import ModelSource, code_files
from pipeline.parity import Tolerance, tolerance_for


@dataclass(frozen=True)
class RunContext:
    config: PipelineConfig
    #: values computed once per run and shared by its stages (e.g. the QDQ calibration)
    memo: dict[Any, Any] = field(default_factory=dict, compare=False, repr=False)

    @cached_property
    def source(self) -> ModelSource:
        return ModelSource.from_config(self.config)

    @property
    def label(self) -> str:
        """Name of the model's artifact folders and report: the source's label, plus the
        pruning when there is one, so a pruned model never overwrites the unpruned one's files
        (e.g. ``mobilenet_v2_1.0_128_10cls-pruned30``)."""
        c = self.config
        if not c.prune:
            return self.source.label
        kind = "pruned" if c.prune_mode == "structured" else "sparse"
        return f"{self.source.label}-{kind}{round(c.prune * 100):g}"

    def tolerance(self, precision: str) -> Tolerance:
        return tolerance_for(precision, self.config.tolerances or None)

    @cached_property
    def model_identity(self) -> dict[str, Any]:
        """Everything that defines the reference model; part of every stage's cache key.

        Computed when the first stage's key is (after ``preflight`` built the model), so that
        ``code`` covers every module of the user's folder or package the model loaded."""
        c = self.config
        identity = {"model": c.model, "width": c.width, "resolution": c.resolution,
                    "num_classes": c.num_classes, "code": _source_code_digest(c.model),
                    "weights": sha256_file(c.weights) if c.weights else None}
        if self.source.nas_identity is not None:   # mobilenet_nas: its point of the space
            identity["nas"] = self.source.nas_identity
        if c.mean is not None or c.std is not None:   # the input normalisation the user gave
            identity["normalise"] = {"mean": c.mean, "std": c.std}
        if self.source.is_onnx:   # the file's content, not only its path
            from pipeline.onnx_input import onnx_digest

            identity["onnx"] = onnx_digest(c.model)
        return identity

    @cached_property
    def calib_identity(self) -> str | None:
        """Digest of the calibration folder's file names and contents (None without --calib)."""
        if self.config.calib is None:
            return None
        return _folder_digest(Path(self.config.calib))

    def accuracy_drop(self, precision: str) -> float | None:
        """Largest accuracy drop allowed for this precision (None: no accuracy gate)."""
        return self.config.accuracy_gates.get(precision)

    @cached_property
    def eval_identity(self) -> dict[str, Any] | None:
        """What the labelled evaluation set depends on (None when there is none)."""
        if self.config.eval is not None:
            return {"folder": _folder_digest(Path(self.config.eval))}
        if self.config.dataset is not None:
            return {"dataset": self.config.dataset, "seed": self.config.parity.seed}
        return None

    def measure_config(self, precision: str) -> dict[str, Any]:
        """The settings that change a node's parity, accuracy and latency records."""
        return {"threads": self.config.threads, "bench": self.config.bench.model_dump(),
                "tolerance": self.tolerance(precision).cache_identity(),
                "accuracy_drop": self.accuracy_drop(precision)}


def _folder_digest(root: Path) -> str:
    """Digest of an image folder's relative file names and contents."""
    digest = hashlib.sha256()
    for path in list_images(root):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        digest.update(sha256_file(path).encode())
    return digest.hexdigest()


def _source_code_digest(ref: str) -> str | None:
    """Digest of the user's code behind a ``file.py:factory`` or ``package.module:factory``
    model (None for a zoo model): the relative name and sha256 of the named file and of every
    loaded module in its folder or package (:func:`pipeline.model_source.code_files`), so that
    editing a helper the model imports invalidates the cache as editing the file itself does;
    relative names keep it the same from any checkout location."""
    files = code_files(ref)
    if not files:
        return None
    digest = hashlib.sha256()
    for name, path in files:
        digest.update(name.encode() + b"\0" + sha256_file(path).encode() + b"\n")
    return digest.hexdigest()
