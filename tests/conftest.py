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
    """A tiny MobileNetV2 (α 0.35, 64 px, 10 classes) briefly trained on scikit-learn's digits,
    plus a folder of held-out digit images. int8 parity is only meaningful on trained weights."""
    import numpy as np
    import torch
    from PIL import Image
    from safetensors.torch import save_file
    from sklearn.datasets import load_digits

    from pipeline.data import preprocess
    from pipeline.models.registry import ModelSpec, build, preprocessing_for

    root = tmp_path_factory.mktemp("trained")
    spec = ModelSpec("mobilenet_v2", 0.35, 64, 10)
    prep = preprocessing_for(spec)
    digits = load_digits()
    pixels = (digits.images / 16.0 * 255).astype(np.uint8)
    rgb = [np.repeat(np.kron(img, np.ones((9, 9), np.uint8))[..., None], 3, axis=2)
           for img in pixels]                                  # 72x72 RGB digits
    x = torch.from_numpy(np.stack([preprocess(img, prep) for img in rgb]))
    y = torch.from_numpy(digits.target).long()
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    train, held_out = order[:1500], order[1500:]
    torch.manual_seed(0)
    model = build(spec).train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(4):
        for batch in train.split(64):
            optimiser.zero_grad()
            torch.nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            optimiser.step()
    model.eval()
    with torch.inference_mode():
        accuracy = (model(x[held_out]).argmax(1) == y[held_out]).float().mean().item()
    weights = root / "digits.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    calib = root / "calib"
    for index in held_out[:48].tolist():
        folder = calib / str(int(y[index]))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb[index]).save(folder / f"{index}.png")
    return {"weights": weights, "calib": calib, "accuracy": accuracy, "spec": spec}
