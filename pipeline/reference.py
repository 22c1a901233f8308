"""The reference record: parity inputs and the eager fp32 model's outputs on them.

Stored as safetensors (deterministic bytes, no pickle), so every later stage compares against the
very same numbers, and ``verify`` can re-check an artifact long after the run.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file
from safetensors import safe_open

from pipeline.data import ParityInputs

_INPUTS = "inputs"
_OUT = "out:"


@dataclass
class Reference:
    inputs: ParityInputs
    outputs: dict[str, np.ndarray]   # name -> (N, ...) reference outputs

    def save(self, path: Path) -> None:
        tensors = {_INPUTS: self.inputs.batch}
        tensors.update({_OUT + name: np.ascontiguousarray(v) for name, v in self.outputs.items()})
        meta = {"names": json.dumps(self.inputs.names), "kinds": json.dumps(self.inputs.kinds),
                "outputs": json.dumps(list(self.outputs))}
        save_file(tensors, str(path), metadata=meta)

    @classmethod
    def load(cls, path: Path) -> "Reference":
        with safe_open(str(path), framework="numpy") as handle:
            meta = handle.metadata()
        tensors = load_file(str(path))
        inputs = ParityInputs(names=json.loads(meta["names"]), kinds=json.loads(meta["kinds"]),
                              batch=tensors[_INPUTS])
        outputs = {name: tensors[_OUT + name] for name in json.loads(meta["outputs"])}
        return cls(inputs, outputs)
