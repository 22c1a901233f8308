"""Training recipes: the optimiser settings each zoo family trains with, and the pieces every
training loop here shares (parameter groups, warm-up + cosine schedule, BatchNorm momentum).

**Why MobileNetV3 trained to chance with one recipe for all.** Its BatchNorm layers use the
paper's TensorFlow decay 0.99 (PyTorch momentum 0.01, as torchvision builds them): the running
statistics average over ~100 steps, which suits ImageNet's ~10⁶ steps but not a fine-tuning
run of a few hundred. Measured on digits (V3-Small α 1.0, 64 px, AdamW lr 1e-2, 4 epochs): the
training loss fell 2.31 → 0.34 and the validation accuracy *with batch statistics* rose to
93.6 %, while the same model in eval mode (running statistics) stayed at 13.6 % — the weights
had learnt, the running statistics had not caught up with them. With momentum 0.1 during
training the eval-mode accuracy is 93.6 % too. So training uses :data:`TRAIN_BN_MOMENTUM`
(PyTorch's default), and the model's own momentum is restored afterwards, so the exported graph
is the zoo's (:func:`bn_momentum`).

With the running statistics fixed, the momentum alone is not enough for V3. Held-out accuracy
(360 digits images) at 128 px, 6 epochs, AdamW, on a 2-core AMD EPYC (seed = the data split and
initialisation; differences of ~1.5 pt are noise at this size):

================================================  =========  =========  ==========
recipe (all with BatchNorm momentum 0.1)           V3-S s0    V3-S s1    V3-L .75
================================================  =========  =========  ==========
lr 1e-2, no warm-up, no smoothing                  96.1 %     90.6 %
lr 1e-2, 1 warm-up epoch                           96.7 %     98.1 %
lr 1e-2, label smoothing 0.1                       98.3 %     96.9 %     95.0 %
lr 1e-2, 1 warm-up epoch, smoothing 0.1            95.3 %     98.9 %     95.8 %
lr 5e-3, smoothing 0.1                                                   94.2 %
**lr 5e-3, 1 warm-up epoch, smoothing 0.1**        97.8 %     99.4 %     96.7 %
================================================  =========  =========  ==========

V3 starts unstably at lr 1e-2 (a first-epoch loss of 2.87 for V3-L, above chance's 2.30, and a
validation accuracy that dips to 0.8 % in the second epoch without warm-up); its gradients are
largest early (V3-Small: median gradient norm 10 in the first epoch against 3 in the fourth).
So V3 trains at half the rate, after one epoch of linear warm-up, with label smoothing 0.1
(timm's training default, which its MobileNetV3 recipes use). For every family, no weight
decay on BatchNorm parameters and biases (:func:`parameter_groups`). V1/V2 keep lr 1e-2
without warm-up or smoothing (97.2 % / 96.7 % at 128 px). Every value is overridable (``--lr``,
``--batch-size``, ``--weight-decay``, ``--warmup-epochs``, the YAML ``train:`` section).
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, replace
from typing import Any, Iterator

import torch
from torch import nn

#: BatchNorm momentum while training (PyTorch's default; see the module docstring).
TRAIN_BN_MOMENTUM = 0.1


@dataclass(frozen=True)
class TrainRecipe:
    """Optimiser settings of one training run (AdamW, warm-up then cosine decay)."""

    lr: float = 1e-2
    batch_size: int = 32
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    #: progressive resizing (zoo models): all epochs but the last at this fraction of the side
    low_res_scale: float = 0.75
    source: str = "default"

    def overridden(self, overrides: dict[str, Any]) -> TrainRecipe:
        """This recipe with the user's settings (``None`` values keep the recipe's)."""
        given = {k: v for k, v in overrides.items() if v is not None}
        if not given:
            return self
        return replace(self, **given, source=f"{self.source}, overridden: {sorted(given)}")

    def identity(self) -> dict[str, Any]:
        """What decides the training result (for the cache key)."""
        return {"lr": self.lr, "batch_size": self.batch_size, "weight_decay": self.weight_decay,
                "warmup_epochs": self.warmup_epochs, "label_smoothing": self.label_smoothing,
                "low_res_scale": self.low_res_scale,
                "bn_momentum": TRAIN_BN_MOMENTUM, "optimizer": "adamw"}


_V1_V2 = TrainRecipe(source="MobileNetV1/V2 recipe")
_V3 = TrainRecipe(lr=5e-3, warmup_epochs=1.0, label_smoothing=0.1, source="MobileNetV3 recipe")

#: The recipe of each zoo family; models from outside the zoo get :class:`TrainRecipe()`.
RECIPES: dict[str, TrainRecipe] = {
    "mobilenet_v1": _V1_V2,
    "mobilenet_v2": _V1_V2,
    "mobilenet_v3_small": _V3,
    "mobilenet_v3_large": _V3,
}


def recipe_for(model: str, overrides: dict[str, Any] | None = None) -> TrainRecipe:
    """The family's recipe for ``model`` (a zoo name or any other reference), with overrides."""
    return RECIPES.get(model, TrainRecipe()).overridden(overrides or {})


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on conv/linear weights only, none on BatchNorm parameters and
    biases (decaying a BN scale towards 0 switches channels off). The rule is timm's
    ``param_groups_weight_decay`` (1-D tensors and biases are exempt), written out here because
    timm is not a dependency and the rule is two lines."""
    decay, exempt = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        (exempt if parameter.ndim <= 1 or name.endswith(".bias") else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": exempt, "weight_decay": 0.0}]


def schedule(optimiser: torch.optim.Optimizer, recipe: TrainRecipe, steps_per_epoch: int,
             epochs: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Linear warm-up over ``warmup_epochs`` (from 1 % of the rate), then cosine decay to 2 %,
    stepped per batch (torch's LinearLR + CosineAnnealingLR in a SequentialLR)."""
    total = max(1, epochs * steps_per_epoch)
    warmup = min(total - 1, int(round(recipe.warmup_epochs * steps_per_epoch)))
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=max(1, total - warmup),
                                                        eta_min=recipe.lr * 0.02)
    if warmup <= 0:
        return cosine
    ramp = torch.optim.lr_scheduler.LinearLR(optimiser, start_factor=0.01, total_iters=warmup)
    return torch.optim.lr_scheduler.SequentialLR(optimiser, [ramp, cosine], milestones=[warmup])


@contextlib.contextmanager
def bn_momentum(model: nn.Module, momentum: float = TRAIN_BN_MOMENTUM) -> Iterator[None]:
    """Train with BatchNorm ``momentum``; the modules' own values come back afterwards."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.momentum = momentum
    try:
        yield
    finally:
        for m, value in zip(norms, saved):
            m.momentum = value


def chance_limit(num_classes: int, n_val: int) -> float:
    """The highest validation accuracy still indistinguishable from guessing: chance plus three
    standard errors of a binomial at chance on ``n_val`` images."""
    p = 1.0 / max(1, num_classes)
    return p + 3.0 * math.sqrt(p * (1 - p) / max(1, n_val))
