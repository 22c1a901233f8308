"""The reference record: parity inputs and the eager fp32 model's outputs on them, plus (when
labels exist) the evaluation images, their labels and the reference's logits.

Stored as safetensors (deterministic bytes, no pickle), so every later stage compares against the
very same numbers, and ``verify`` can re-check an artifact long after the run.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file, save

from pipeline.data import ParityInputs
from pipeline.safetensors_io import write_canonical

_INPUTS = "inputs"
_OUT = "out:"
_EVAL_INPUTS, _EVAL_LABELS, _EVAL_LOGITS = "eval:inputs", "eval:labels", "eval:logits"


@dataclass
class EvalSet:
    inputs: np.ndarray   # (N, 3, H, W) float32
    labels: np.ndarray   # (N,) int64
    logits: np.ndarray   # the reference's outputs on ``inputs``
    source: str

    def as_parity_inputs(self) -> ParityInputs:
        n = len(self.labels)
        return ParityInputs([f"eval:{i}" for i in range(n)], ["eval"] * n, self.inputs)


@dataclass
class Reference:
    inputs: ParityInputs
    outputs: dict[str, np.ndarray]   # name -> (N, ...) reference outputs
    evaluation: EvalSet | None = None

    def save(self, path: Path) -> None:
        tensors = {_INPUTS: self.inputs.batch}
        tensors.update({_OUT + name: np.ascontiguousarray(v) for name, v in self.outputs.items()})
        meta = {"names": json.dumps(self.inputs.names), "kinds": json.dumps(self.inputs.kinds),
                "outputs": json.dumps(list(self.outputs))}
        if self.evaluation is not None:
            tensors.update({_EVAL_INPUTS: self.evaluation.inputs,
                            _EVAL_LABELS: self.evaluation.labels.astype(np.int64),
                            _EVAL_LOGITS: np.ascontiguousarray(self.evaluation.logits)})
            meta["eval_source"] = self.evaluation.source
        write_canonical(save(tensors, metadata=meta), path)

    @classmethod
    def load(cls, path: Path) -> "Reference":
        with safe_open(str(path), framework="numpy") as handle:
            meta = handle.metadata()
        tensors = load_file(str(path))
        inputs = ParityInputs(names=json.loads(meta["names"]), kinds=json.loads(meta["kinds"]),
                              batch=tensors[_INPUTS])
        outputs = {name: tensors[_OUT + name] for name in json.loads(meta["outputs"])}
        evaluation = None
        if _EVAL_LABELS in tensors:
            evaluation = EvalSet(tensors[_EVAL_INPUTS], tensors[_EVAL_LABELS],
                                 tensors[_EVAL_LOGITS], meta.get("eval_source", "?"))
        return cls(inputs, outputs, evaluation)
