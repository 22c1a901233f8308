"""Knowledge distillation (Hinton et al. 2015) to recover the accuracy of a pruned model.

The loss is the seed's:
``alpha · T² · KL(softmax(t/T) ‖ softmax(s/T)) + (1 − alpha) · CE(s, y)``
(KL with ``reduction="batchmean"``, i.e. summed over classes and averaged over the batch; the T²
keeps the soft term's gradient scale independent of T). The seed weighted the soft term by 0.3;
here the default is 0.7, which leans on the unpruned teacher, as recovery after pruning should.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from pipeline.errors import UserInputError
from pipeline.recipe import bn_momentum

__all__ = ["distillation_loss", "finetune_with_distillation", "Batches"]

#: A data loader (or any re-iterable of ``(inputs, labels)`` batches), or ``(inputs, labels)``
#: tensors that are batched here.
Batches = Iterable[Sequence[Tensor]] | tuple[Tensor, Tensor]


def _check_hyper(T: float, alpha: float) -> None:
    if not (isinstance(T, (int, float)) and math.isfinite(T) and T > 0):
        raise UserInputError(f"distillation temperature T must be > 0, got {T!r}")
    if not (isinstance(alpha, (int, float)) and 0.0 <= alpha <= 1.0):
        raise UserInputError(f"distillation weight alpha must be in [0, 1], got {alpha!r}")


def distillation_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor | None,
    T: float = 4.0,
    alpha: float = 0.7,
) -> Tensor:
    """``alpha · T² · KL(softmax(t/T) ‖ softmax(s/T)) + (1 − alpha) · CE(s, labels)``.

    With ``labels=None`` (unlabelled data) only the soft term is used, at full weight:
    ``T² · KL``. The teacher logits are detached.
    """
    _check_hyper(T, alpha)
    if student_logits.shape != teacher_logits.shape:
        raise UserInputError(
            f"student and teacher logits differ in shape: {tuple(student_logits.shape)} vs "
            f"{tuple(teacher_logits.shape)}"
        )
    soft = F.kl_div(
        F.log_softmax(student_logits / T, dim=1),
        F.softmax(teacher_logits.detach() / T, dim=1),
        reduction="batchmean",
    ) * (T * T)
    if labels is None:
        return soft
    return alpha * soft + (1.0 - alpha) * F.cross_entropy(student_logits, labels)


def _batches(data: Batches, batch_size: int, seed: int) -> Iterable[Sequence[Tensor]]:
    if isinstance(data, tuple) and len(data) == 2 and all(isinstance(t, Tensor) for t in data):
        inputs, labels = data
        if len(inputs) != len(labels):
            raise UserInputError(
                f"{len(inputs)} inputs but {len(labels)} labels given for distillation"
            )
        if len(inputs) == 0:
            raise UserInputError("no training data given for distillation")
        # drop_last: a final batch of one would break BatchNorm in train mode
        return DataLoader(
            TensorDataset(inputs, labels),
            batch_size=batch_size,
            shuffle=True,
            drop_last=len(inputs) > batch_size,
            generator=torch.Generator().manual_seed(seed),
        )
    if iter(data) is data:  # type: ignore[arg-type]
        raise UserInputError(
            "distillation data must be re-iterable (a DataLoader, a list of batches, or an "
            "(inputs, labels) pair of tensors), not a one-shot iterator"
        )
    return data  # type: ignore[return-value]


def finetune_with_distillation(
    student: nn.Module,
    teacher: nn.Module,
    data: Batches,
    epochs: int,
    lr: float = 1e-3,
    T: float = 4.0,
    alpha: float = 0.7,
    device: str | torch.device = "cpu",
    *,
    batch_size: int = 64,
    weight_decay: float = 1e-4,
    seed: int = 0,
) -> list[float]:
    """Fine-tune ``student`` from ``teacher``'s logits in place; return the mean loss per epoch.

    AdamW with a cosine learning-rate schedule (stepped per batch, down to 0 at the end). The
    teacher runs in eval mode without gradients (its mode is restored afterwards); the student
    trains in train mode and is left in eval mode. ``data`` is a data loader of ``(inputs,
    labels)`` batches (``labels`` may be ``None`` for pure distillation) or an ``(inputs, labels)``
    pair of tensors, shuffled into batches of ``batch_size``.
    """
    _check_hyper(T, alpha)
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise UserInputError(f"distillation epochs must be a positive integer, got {epochs!r}")
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise UserInputError(f"distillation learning rate must be > 0, got {lr!r}")
    batches = _batches(data, batch_size, seed)
    try:
        steps_per_epoch = len(batches)  # type: ignore[arg-type]
    except TypeError:
        steps_per_epoch = sum(1 for _ in batches)
    if steps_per_epoch == 0:
        raise UserInputError("no training batches given for distillation")

    device = torch.device(device)
    student.to(device)
    teacher.to(device)
    optimizer = torch.optim.AdamW(student.parameters(), lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=epochs * steps_per_epoch
    )
    teacher_was_training = teacher.training
    teacher.eval()
    student.train()
    try:
        with bn_momentum(student):   # see pipeline.recipe: V3's 0.01 lags a short run
            history = _epochs(student, teacher, batches, epochs, optimizer, scheduler, T, alpha,
                              device)
    finally:
        teacher.train(teacher_was_training)
        student.eval()
    return history


def _epochs(student: nn.Module, teacher: nn.Module, batches: Iterable[Sequence[Tensor]],
            epochs: int, optimizer: torch.optim.Optimizer, scheduler: Any, T: float,
            alpha: float, device: torch.device) -> list[float]:
    """The distillation epochs; the mean loss of each."""
    history: list[float] = []
    for _ in range(epochs):
        total, count = 0.0, 0
        for batch in batches:
            inputs = batch[0].to(device)
            labels = batch[1].to(device) if len(batch) > 1 and batch[1] is not None else None
            with torch.no_grad():
                teacher_logits = teacher(inputs)
            loss = distillation_loss(student(inputs), teacher_logits, labels, T, alpha)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += float(loss.detach()) * len(inputs)
            count += len(inputs)
        history.append(total / count)
    return history
