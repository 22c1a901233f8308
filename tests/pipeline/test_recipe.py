"""Per-family training recipes, their overrides, and the shared training pieces."""
from __future__ import annotations

import pytest
from pydantic import ValidationError
import torch
from torch import nn

from pipeline.config import PipelineConfig
from pipeline.context import RunContext
from pipeline.models.registry import ModelSpec, build
from pipeline.recipe import (RECIPES, TrainRecipe, bn_momentum, chance_limit, parameter_groups,
                             recipe_for, schedule)
from pipeline.stages.finetune import FinetuneStage, recipe


def test_each_zoo_family_has_a_recipe_and_others_the_default() -> None:
    assert set(RECIPES) == {"mobilenet_v1", "mobilenet_v2", "mobilenet_v3_small",
                            "mobilenet_v3_large"}
    v3 = recipe_for("mobilenet_v3_small")
    assert v3.warmup_epochs > 0 and v3.label_smoothing > 0 and v3.lr < recipe_for("mobilenet_v2").lr
    assert recipe_for("my_pkg.models:resnet") == TrainRecipe()


def test_user_settings_override_the_recipe_and_enter_the_cache_key() -> None:
    base = RunContext(PipelineConfig(model="mobilenet_v3_small", finetune_epochs=1))
    tuned = RunContext(PipelineConfig(model="mobilenet_v3_small", finetune_epochs=1,
                                      train={"lr": 3e-3, "batch_size": 64}))
    chosen = recipe(tuned)
    assert (chosen.lr, chosen.batch_size) == (3e-3, 64)
    assert chosen.label_smoothing == recipe(base).label_smoothing > 0
    assert "overridden: ['batch_size', 'lr']" in chosen.source
    assert FinetuneStage(base).config() != FinetuneStage(tuned).config()
    with pytest.raises(ValidationError, match="lr"):
        PipelineConfig(train={"lr": -1})


def test_no_weight_decay_on_batchnorm_and_biases() -> None:
    model = build(ModelSpec("mobilenet_v3_small", 0.5, 64, 10))
    decay, exempt = parameter_groups(model, 1e-4)
    assert decay["weight_decay"] == 1e-4 and exempt["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decay["params"])
    norms = [p for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters()]
    assert {id(p) for p in norms} <= {id(p) for p in exempt["params"]}
    assert len(decay["params"]) + len(exempt["params"]) == len(list(model.parameters()))


def test_warm_up_then_cosine_per_batch() -> None:
    parameter = nn.Parameter(torch.zeros(1))
    optimiser = torch.optim.AdamW([parameter], lr=1.0)
    lr_schedule = schedule(optimiser, TrainRecipe(lr=1.0, warmup_epochs=1.0), steps_per_epoch=10,
                           epochs=3)
    rates = []
    for _ in range(30):
        rates.append(optimiser.param_groups[0]["lr"])
        optimiser.step()
        lr_schedule.step()
    assert rates[0] == pytest.approx(0.01)
    assert rates[:10] == sorted(rates[:10]) and max(rates) == pytest.approx(1.0, rel=1e-6)
    assert rates[10:] == sorted(rates[10:], reverse=True) and rates[-1] < 0.05


def test_training_momentum_is_temporary() -> None:
    model = build(ModelSpec("mobilenet_v3_small", 0.5, 64, 10))
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert {m.momentum for m in norms} == {0.01}     # the paper's TF decay 0.99
    with bn_momentum(model):
        assert {m.momentum for m in norms} == {0.1}
    assert {m.momentum for m in norms} == {0.01}


def test_chance_limit_is_chance_plus_three_standard_errors() -> None:
    assert chance_limit(10, 100) == pytest.approx(0.1 + 3 * 0.03)
    assert chance_limit(2, 10_000) == pytest.approx(0.5 + 3 * 0.005)
