"""The training loop trains every zoo family above chance, and stops with a clear error when the
loss is not finite or the model still guesses (pipeline.finetune)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.data import digits_splits
from pipeline.finetune import TrainConfig, TrainingDiverged, accuracy, train
from pipeline.models.registry import ModelSpec, build, preprocessing_for
from pipeline.recipe import recipe_for

#: tiny widths (every layer near its 8-channel floor) at 64 px: seconds per epoch on one core
FAMILIES = [("mobilenet_v1", 0.25), ("mobilenet_v2", 0.35), ("mobilenet_v3_small", 0.5),
            ("mobilenet_v3_large", 0.35)]


@pytest.fixture(scope="module")
def digits():
    return digits_splits(0)


@pytest.mark.parametrize("name,width", FAMILIES, ids=[f for f, _ in FAMILIES])
def test_every_family_trains_well_above_chance(digits, name: str, width: float) -> None:
    """In eval mode, i.e. with the running BatchNorm statistics (V3's paper momentum 0.01 left
    them at chance while the weights had learnt: pipeline.recipe)."""
    spec = ModelSpec(name, width, 64, 10)
    prep = preprocessing_for(spec)
    fit, held_out = digits["train"], digits["eval"]
    torch.manual_seed(0)
    model = build(spec)
    momenta = {m.momentum for m in model.modules() if isinstance(m, nn.BatchNorm2d)}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train(model, fit.batch(prep), fit.labels, held_out.batch(prep)[:120],
                       held_out.labels[:120], TrainConfig(epochs=3, recipe=recipe_for(name)))
    finally:
        torch.set_num_threads(threads)
    value = accuracy(model, torch.from_numpy(held_out.batch(prep)[120:]),
                     torch.from_numpy(held_out.labels[120:]))
    print(f"{name} α {width} 64 px, 3 epochs: held-out accuracy {100 * value:.1f} %, "
          f"history {result.history}")
    assert value >= 0.4, f"{name}: {100 * value:.1f} % after 3 epochs (chance: 10 %)"
    assert not model.training
    assert {m.momentum for m in model.modules() if isinstance(m, nn.BatchNorm2d)} == momenta, \
        "the model's own BatchNorm momentum is restored after training"
    assert all(p.is_contiguous() for p in model.parameters()), \
        "trained in channels-last, given back in the standard layout"


class _Constant(nn.Module):
    """Ignores its input: trains, but can never beat guessing."""

    def __init__(self) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(len(x), 10) + 0 * x.mean()


def _data(n: int = 200):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 3, 8, 8)).astype(np.float32)
    y = np.arange(n) % 10
    return x, y


def test_a_model_at_chance_stops_after_the_check_epochs_naming_the_options() -> None:
    x, y = _data()
    with pytest.raises(TrainingDiverged) as caught:
        train(_Constant(), x, y, x, y, TrainConfig(epochs=5, chance_after=2))
    message = str(caught.value)
    assert "at chance" in message and "in epoch 2 of 5" in message
    assert "--lr" in message and "--warmup-epochs" in message
    assert [h["epoch"] for h in caught.value.history] == [0, 1]
    assert caught.value.record["info"]["history"] == caught.value.history


def test_a_loss_that_becomes_nan_stops_at_once() -> None:
    class Broken(_Constant):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x) * float("nan")

    x, y = _data()
    with pytest.raises(TrainingDiverged, match=r"the loss became nan at batch 1 in epoch 1 of 3"):
        train(Broken(), x, y, x, y, TrainConfig(epochs=3))


class _SeesSize(nn.Module):
    """Records the side of every batch it is trained on."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(3, 10)
        self.sides: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.sides.append(int(x.shape[-1]))
        return self.head(x.mean((2, 3)))


def test_progressive_resizing_trains_early_epochs_small_and_the_last_at_full_size() -> None:
    x, y = _data(64)
    x = np.repeat(np.repeat(x, 4, axis=2), 4, axis=3)          # 32 px
    model = _SeesSize()
    result = train(model, x, y, x, y, TrainConfig(epochs=4, chance_after=99, low_resolution=16,
                                                  recipe=recipe_for("mobilenet_v2")))
    per_epoch = len(model.sides) // 4
    assert model.sides == [16] * (2 * per_epoch) + [32] * (2 * per_epoch)
    assert [h["resolution"] for h in result.history] == [16, 16, 32, 32]
    assert result.best_epoch in (2, 3)                       # chosen among full-size epochs


def test_downscaling_is_antialiased_and_skipped_when_there_is_nothing_to_do() -> None:
    from pipeline.finetune import downscaled

    x = torch.zeros(2, 3, 8, 8)
    x[..., ::2, :] = 1.0                                       # stripes one pixel apart
    small = downscaled(x, 4)
    inner = small[..., 1:-1, :]                                # away from the clamped border
    assert small.shape == (2, 3, 4, 4) and torch.allclose(inner, torch.full_like(inner, 0.5))
    assert downscaled(x, 8) is None and downscaled(x, None) is None
