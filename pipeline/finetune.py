"""Training loop of the ``finetune`` stage: augmentation, AdamW, cosine schedule, best checkpoint.

Deliberately small: the job is to produce a *trained* model (int8 and pruning parity are
meaningless on random weights), not to win a leaderboard.
"""
from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int
    batch_size: int = 32
    lr: float = 1e-2
    weight_decay: float = 1e-4
    label_smoothing: float = 0.0
    max_shift: float = 0.05       # random translation, fraction of the side
    hflip: bool = False           # off for digits: a mirrored 3 is not a 3
    seed: int = 0


@dataclass
class TrainResult:
    best_epoch: int
    best_val_accuracy: float
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def augment(x: torch.Tensor, generator: torch.Generator, max_shift: float,
            hflip: bool) -> torch.Tensor:
    """Random translation (reflect-padded roll) and optional horizontal flip, per batch."""
    side = x.shape[-1]
    pad = max(1, int(round(side * max_shift)))
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad), mode="replicate")
    dx, dy = (int(v) for v in torch.randint(0, 2 * pad + 1, (2,), generator=generator))
    out = padded[..., dy:dy + side, dx:dx + side]
    if hflip and torch.rand(1, generator=generator).item() < 0.5:
        out = out.flip(-1)
    return out


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> float:
    model.eval()
    correct = 0
    with torch.inference_mode():
        for start in range(0, len(y), batch_size):
            logits = model(x[start:start + batch_size])
            correct += int((logits.argmax(1) == y[start:start + batch_size]).sum())
    return correct / max(1, len(y))


def train(model: nn.Module, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray,
          y_val: np.ndarray, cfg: TrainConfig) -> TrainResult:
    """Train ``model`` in place; at the end it holds the weights of the best validation epoch."""
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train).long()
    xv, yv = torch.from_numpy(x_val), torch.from_numpy(y_val).long()
    optimiser = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * math.ceil(len(yt) / cfg.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=steps,
                                                          eta_min=cfg.lr * 0.02)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    best = TrainResult(best_epoch=-1, best_val_accuracy=-1.0)
    best_state = copy.deepcopy(model.state_dict())
    start = time.perf_counter()
    for epoch in range(cfg.epochs):
        model.train()
        order = torch.randperm(len(yt), generator=generator)
        total = 0.0
        for batch in order.split(cfg.batch_size):
            optimiser.zero_grad(set_to_none=True)
            loss = loss_fn(model(augment(xt[batch], generator, cfg.max_shift, cfg.hflip)),
                           yt[batch])
            loss.backward()
            optimiser.step()
            schedule.step()
            total += float(loss.detach()) * len(batch)
        val = accuracy(model, xv, yv)
        best.history.append({"epoch": epoch, "loss": total / len(yt), "val_accuracy": val})
        log.info("epoch %d loss %.4f val %.4f", epoch, total / len(yt), val)
        if val > best.best_val_accuracy:
            best.best_epoch, best.best_val_accuracy = epoch, val
            best_state = copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    model.eval()
    best.seconds = time.perf_counter() - start
    return best
