"""The finetune stage from the command line: a recipe forced to diverge stops with the clear
error, exit code 1, nothing published, and the epochs so far in the report."""
from __future__ import annotations

import json
import re
from pathlib import Path

from typer.testing import CliRunner

from pipeline.cli import app


def test_an_absurd_learning_rate_stops_training_with_exit_1_and_publishes_nothing(
        tmp_path: Path) -> None:
    artifacts = tmp_path / "artifacts"
    result = CliRunner().invoke(app, [
        "run", "--model", "mobilenet_v2", "--width", "0.35", "--resolution", "32",
        "--num-classes", "10", "--dataset", "digits", "--finetune-epochs", "3", "--lr", "1e30",
        "--targets", "onnx", "--artifacts-dir", str(artifacts), "--out", str(tmp_path / "r")])
    assert result.exit_code == 1, result.output
    assert "training diverged" in result.output and "--lr" in result.output
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    nodes = {n["name"]: n for n in report["nodes"]}
    finetune = nodes["finetune"]
    assert finetune["status"] == "failed" and finetune["parity"]["verdict"] == "fail"
    assert re.search(r"the loss became (nan|inf) at batch \d+ in epoch 1 of 3", finetune["error"])
    assert "lr 1e+30" in finetune["error"]
    assert finetune["info"]["history"] == []       # it stopped in the first epoch
    others = [n for name, n in nodes.items() if name != "finetune"]
    assert others and all(n["status"] == "skipped" for n in others), others
    published = [p for p in artifacts.rglob("*") if p.is_file() and "cache" not in p.parts]
    assert published == [], published
