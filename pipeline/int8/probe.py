"""The probe the int8 search measures on: in-distribution inputs and the reference's outputs.

Sensitivity and every candidate's error are measured as the mean over these inputs of
1 − centred cosine to the reference (0 = identical), on any runner, so one definition serves every
runtime's quantizer (ONNX Runtime in this process, LiteRT in the converter's child).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.data import ParityInputs
from pipeline.parity import centred_cosines, run_outputs
from pipeline.reference import Reference
from pipeline.verify import IN_DISTRIBUTION

_PROBE_BATCH = 64


@dataclass(frozen=True)
class Probe:
    """The inputs sensitivity is measured on and the reference's (first) output on them."""

    inputs: ParityInputs
    expected: np.ndarray

    @classmethod
    def of(cls, reference: Reference) -> "Probe":
        """In-distribution parity inputs plus the whole labelled evaluation set (of which the
        parity set's ``eval`` inputs are a sample); every parity input when there is neither."""
        name = next(iter(reference.outputs))
        kinds = ("calib",) if reference.evaluation is not None else IN_DISTRIBUTION
        chosen = np.flatnonzero(np.isin(reference.inputs.kinds, kinds))
        if len(chosen) == 0 and reference.evaluation is None:
            chosen = np.arange(len(reference.inputs))
        batch, expected = [reference.inputs.batch[chosen]], [reference.outputs[name][chosen]]
        if reference.evaluation is not None:
            batch.append(reference.evaluation.inputs)
            expected.append(reference.evaluation.logits)
        return cls.of_arrays(np.concatenate(batch), np.concatenate(expected))

    @classmethod
    def of_arrays(cls, batch: np.ndarray, expected: np.ndarray) -> "Probe":
        n = len(batch)
        return cls(ParityInputs([f"probe:{i}" for i in range(n)], ["probe"] * n, batch), expected)

    def sample(self, n: int) -> "Probe":
        """At most ``n`` of the probe's inputs, evenly spaced: deterministic, and a spread of
        classes (the evaluation split is shuffled)."""
        if len(self.inputs) <= n:
            return self
        chosen = np.linspace(0, len(self.inputs) - 1, n).round().astype(int)
        return Probe.of_arrays(self.inputs.batch[chosen], self.expected[chosen])

    def save(self, path: Path) -> Path:
        """Write the probe to ``path`` (.npz) for a converter's child process."""
        with open(path, "wb") as handle:
            np.savez(handle, batch=self.inputs.batch, expected=self.expected)
        return path

    @classmethod
    def load(cls, path: Path) -> "Probe":
        with np.load(path) as data:
            return cls.of_arrays(data["batch"], data["expected"])

    def error(self, model: Path, threads: int = 1) -> float:
        """:meth:`error_of` an artifact file, on the runner of the target that runs it."""
        from targets.base import file_runner

        return self.error_of(file_runner(model, threads))

    def error_of(self, runner: Any) -> float:
        """Mean over the probe inputs of 1 − centred cosine to the reference (0 = identical),
        on any runner (targets.base.Runner) of the candidate."""
        outputs = run_outputs(runner, self.inputs, _PROBE_BATCH)
        cosines = centred_cosines(self.expected.astype(np.float64),
                                  next(iter(outputs.values())).astype(np.float64))
        if cosines is None:
            raise ValueError("sensitivity needs an output with at least 2 values per sample")
        return float(np.mean(1.0 - cosines))
