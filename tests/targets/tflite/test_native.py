"""The Keras-native TFLite references make bench times the product's artifacts against."""
from __future__ import annotations

import os
import time

import numpy as np

from targets.tflite.inspect import io_details
from targets.tflite.native import _key, native_references


def test_native_references_convert_once_from_the_given_calibration(tmp_path) -> None:
    calibration = np.random.default_rng(0).standard_normal((4, 3, 64, 64)).astype(np.float32)
    leftover = tmp_path / "bench" / "native" / ".native-killed"
    leftover.mkdir(parents=True)
    os.utime(leftover, (time.time() - 86400, time.time() - 86400))
    native = native_references(tmp_path, 64, 0.35, calibration)
    assert not leftover.exists()                          # a killed bench's leftovers swept
    facts = native["facts"]
    assert facts["calibration_images"] == 4
    fp32, int8 = facts["files"]["fp32"]["ops"], facts["files"]["int8"]["ops"]
    assert fp32["CONV_2D"] == int8["CONV_2D"] > 0 and "PAD" not in fp32   # Keras pads "same"
    assert {"QUANTIZE", "DEQUANTIZE"} <= set(int8)        # full-integer, float I/O
    assert io_details(native["paths"]["fp32"])["inputs"][0]["shape"] == [1, 64, 64, 3]
    int8_io = io_details(native["paths"]["int8"])
    assert int8_io["inputs"][0]["dtype"] == "float32"
    stamp = native["paths"]["int8"].stat().st_mtime_ns
    again = native_references(tmp_path, 64, 0.35, calibration)
    assert again["paths"] == native["paths"] and again["facts"] == facts
    assert native["paths"]["int8"].stat().st_mtime_ns == stamp     # reused, not converted again
    assert not list((tmp_path / "bench" / "native").glob(".native-*"))


def test_the_key_changes_with_every_input_that_changes_the_files() -> None:
    calibration = np.zeros((2, 3, 8, 8), np.float32)
    base = _key(64, 0.35, 0, calibration)
    assert base == _key(64, 0.35, 0, calibration.copy())
    assert len({base, _key(96, 0.35, 0, calibration), _key(64, 1.0, 0, calibration),
                _key(64, 0.35, 1, calibration), _key(64, 0.35, 0, calibration + 1)}) == 5


def test_facts_that_are_not_a_conversion_s_are_refused_with_the_fix(tmp_path) -> None:
    import pytest

    from targets.tflite.native import MAX_FACTS_BYTES, _read_facts

    for content in (b"not json", b'{"files": {}}', b" " * (MAX_FACTS_BYTES + 1)):
        (tmp_path / "facts.json").write_bytes(content)
        with pytest.raises(ValueError, match="delete .* and run make bench again"):
            _read_facts(tmp_path / "facts.json")
