"""Shared fixtures: one tiny end-to-end run reused by the stage, run and target tests."""
from __future__ import annotations

from pathlib import Path

import pytest

TINY = {"model": "mobilenet_v2", "width": 0.35, "resolution": 64, "num_classes": 10,
        "bench": {"warmup": 10, "runs": 50, "batch": 4}, "parity": {"n_random": 2}}


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory):
    """A cold run of the whole trunk on a tiny model (MobileNetV2 α 0.35, 64 px, 10 classes)."""
    from pipeline.config import PipelineConfig
    from pipeline.run import execute

    root = tmp_path_factory.mktemp("tiny")
    config = PipelineConfig.model_validate({**TINY, "artifacts_dir": root / "artifacts",
                                            "out": root / "report"})
    return execute(config)


@pytest.fixture()
def tiny_config(tmp_path: Path):
    """A fresh config for the tiny model with its own artifacts folder."""
    from pipeline.config import PipelineConfig

    def make(**overrides):
        data = {**TINY, "artifacts_dir": tmp_path / "artifacts", "out": tmp_path / "report"}
        data.update(overrides)
        return PipelineConfig.model_validate(data)

    return make
