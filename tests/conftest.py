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


@pytest.fixture(scope="session")
def trained_tiny(tmp_path_factory: pytest.TempPathFactory):
    """A tiny MobileNetV2 (α 0.35, 64 px, 10 classes) trained on the digits' train split by the
    pipeline's own training loop, plus a folder of the calibration split's images. int8 parity
    is only meaningful on trained weights."""
    import torch
    from PIL import Image
    from safetensors.torch import save_file

    from pipeline.data import digits_splits
    from pipeline.finetune import TrainConfig, accuracy, train
    from pipeline.models.registry import ModelSpec, build, preprocessing_for

    root = tmp_path_factory.mktemp("trained")
    spec = ModelSpec("mobilenet_v2", 0.35, 64, 10)
    prep = preprocessing_for(spec)
    splits = digits_splits(0)
    fit, held_out = splits["train"], splits["eval"]
    torch.manual_seed(0)
    model = build(spec)
    train(model, fit.batch(prep), fit.labels, held_out.batch(prep)[:100], held_out.labels[:100],
          TrainConfig(epochs=4, seed=0))
    value = accuracy(model, torch.from_numpy(held_out.batch(prep)),
                     torch.from_numpy(held_out.labels))
    weights = root / "digits.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    calib = root / "calib"
    for name, image, label in zip(splits["calib"].names, splits["calib"].images,
                                  splits["calib"].labels):
        folder = calib / str(int(label))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{name.replace(':', '_')}.png")
    return {"weights": weights, "calib": calib, "accuracy": value, "spec": spec}


@pytest.fixture(scope="session")
def trained_tiny_export(trained_tiny, tmp_path_factory: pytest.TempPathFactory):
    """The trained tiny model's fp32 ONNX and its reference record (digits evaluation set),
    from a run of the trunk: what the int8 stages start from."""
    import json

    from pipeline.cache import Cache
    from pipeline.config import PipelineConfig
    from pipeline.run import execute

    root = tmp_path_factory.mktemp("trained_export")
    config = PipelineConfig.model_validate({**TINY, "artifacts_dir": root / "artifacts",
                                            "out": root / "report", "dataset": "digits",
                                            "weights": trained_tiny["weights"]})
    outcome = execute(config)
    onnx_node = next(n for n in outcome.report["nodes"] if n["name"] == "export_onnx")
    cache = Cache(config.cache_dir)
    records = [json.loads(p.read_text()) for p in cache.runs.glob("*.json")]
    load = next(r for r in records if r["stage"] == "load")
    return {"onnx": Path(onnx_node["artifact"]["path"]), "config": config,
            "reference": cache.object_path(load["outputs"]["reference"]["digest"])}


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny tensors: one intra-op thread is faster than two, and immune to a busy second core.
    Use per module: ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
