"""The sensitivity probe's sample: deterministic, evenly spread, the inputs with their outputs."""
from __future__ import annotations

import numpy as np

from pipeline.int8.probe import Probe


def test_a_sample_is_evenly_spread_and_keeps_each_input_with_its_output():
    batch = np.arange(360, dtype=np.float32).reshape(360, 1, 1, 1)
    probe = Probe.of_arrays(batch, batch.reshape(360, 1) * 2)
    sample = probe.sample(96)
    values = sample.inputs.batch.ravel()
    assert len(values) == 96 and values[0] == 0 and values[-1] == 359
    assert np.all(np.diff(values) >= 3) and np.all(np.diff(values) <= 4)
    np.testing.assert_array_equal(sample.expected.ravel(), values * 2)
    np.testing.assert_array_equal(probe.sample(96).inputs.batch, sample.inputs.batch)
    assert probe.sample(500) is probe
