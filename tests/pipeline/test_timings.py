"""make timings: real commands timed in fresh processes, the goals judged from the figures."""
from __future__ import annotations

import json

import pytest

from pipeline.timings import RERUN_OVER_FLOOR_S, main

pytestmark = pytest.mark.slow


def test_cold_run_then_cached_reruns_are_timed_against_the_floor(tmp_path, capsys):
    out = tmp_path / "timings.json"
    args = ["--model", "mobilenet_v2", "--width", "0.35", "--resolution", "64",
            "--num-classes", "10", "--targets", "onnx", "--precisions", "fp32"]
    assert main(["--cold", "--out", str(out), "--", *args]) == 0
    result = json.loads(out.read_text())
    assert result["command"] == ["mobile-export", "run", *args]
    assert result["cold"]["exit_code"] == 0 and result["cold"]["seconds"] > 0
    assert result["rerun"]["exit_codes"] == [0, 0, 0] and len(result["floor"]["runs_s"]) == 5
    floor, rerun = result["floor"]["median_s"], result["rerun"]
    assert rerun["goal_s"] == pytest.approx(floor + RERUN_OVER_FLOOR_S, abs=1e-3)
    assert rerun["met"] == (rerun["median_s"] <= rerun["goal_s"])
    assert result["machine"]["cpu_model"] and "rerun, all cached" in capsys.readouterr().out
    assert not list(tmp_path.glob("mobile-export-timings-*"))
