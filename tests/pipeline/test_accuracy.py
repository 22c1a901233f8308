"""Accuracy, its Wilson interval, and the accuracy gate."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.accuracy import accuracy_failures, accuracy_record, wilson_interval


def test_wilson_interval_known_values() -> None:
    low, high = wilson_interval(90, 100)
    assert low == pytest.approx(0.8256, abs=1e-3) and high == pytest.approx(0.9448, abs=1e-3)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == pytest.approx(1.0)


def test_record_and_gate() -> None:
    labels = np.array([0, 1, 2, 3])
    reference = np.eye(4)                          # all four right
    candidate = np.eye(4)[[0, 1, 2, 0]]            # last one wrong
    record = accuracy_record(candidate, labels, reference)
    assert record["value"] == 0.75 and record["delta"] == -0.25 and record["n"] == 4
    assert record["top1_agreement"] == 0.75
    assert accuracy_failures(record, 0.01)[0].startswith("accuracy 75.00 % is 25.00 pt below")
    assert accuracy_failures(record, 0.3) == [] and accuracy_failures(record, None) == []
