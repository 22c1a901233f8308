"""Knowledge-distillation loss and fine-tuning."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from pipeline.distill import distillation_loss, finetune_with_distillation
from pipeline.errors import UserInputError

STUDENT = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
TEACHER = [[2.0, 1.0, 0.0], [0.5, 0.5, 2.0]]
LABELS = [1, 2]


pytestmark = pytest.mark.usefixtures("one_torch_thread")

def _softmax(row, T=1.0):
    exps = [math.exp(v / T) for v in row]
    return [e / sum(exps) for e in exps]


def _hand_loss(T: float, alpha: float) -> float:
    kl = 0.0
    ce = 0.0
    for s, t, y in zip(STUDENT, TEACHER, LABELS):
        p_t, p_s = _softmax(t, T), _softmax(s, T)
        kl += sum(pt * (math.log(pt) - math.log(ps)) for pt, ps in zip(p_t, p_s))
        ce += -math.log(_softmax(s)[y])
    n = len(LABELS)
    return alpha * T * T * kl / n + (1 - alpha) * ce / n


@pytest.mark.parametrize("T, alpha", [(4.0, 0.7), (1.0, 0.5), (2.0, 0.0), (3.0, 1.0)])
def test_loss_equals_hand_computed_value(T, alpha):
    s, t = torch.tensor(STUDENT, dtype=torch.float64), torch.tensor(TEACHER, dtype=torch.float64)
    loss = distillation_loss(s, t, torch.tensor(LABELS), T, alpha)
    assert float(loss) == pytest.approx(_hand_loss(T, alpha), rel=1e-9)


def test_default_hyperparameters_are_T4_alpha07():
    loss = distillation_loss(torch.tensor(STUDENT), torch.tensor(TEACHER), torch.tensor(LABELS))
    assert float(loss) == pytest.approx(_hand_loss(4.0, 0.7), rel=1e-5)


def test_loss_without_labels_is_the_soft_term_only():
    s, t = torch.tensor(STUDENT), torch.tensor(TEACHER)
    assert float(distillation_loss(s, t, None, T=2.0)) == pytest.approx(_hand_loss(2.0, 1.0), rel=1e-5)


def test_identical_logits_give_zero_soft_loss_and_teacher_gets_no_gradient():
    s = torch.tensor(STUDENT, requires_grad=True)
    t = torch.tensor(TEACHER, requires_grad=True)
    assert float(distillation_loss(t.detach(), t.detach(), None)) == pytest.approx(0.0, abs=1e-5)
    distillation_loss(s, t, torch.tensor(LABELS)).backward()
    assert s.grad is not None and t.grad is None


@pytest.mark.parametrize("T, alpha", [(0.0, 0.5), (-1.0, 0.5), (math.nan, 0.5), (4.0, 1.5), (4.0, -0.1)])
def test_bad_hyperparameters_are_clear_errors(T, alpha):
    with pytest.raises(UserInputError, match="temperature|alpha"):
        distillation_loss(torch.tensor(STUDENT), torch.tensor(TEACHER), torch.tensor(LABELS), T, alpha)


def test_shape_mismatch_is_an_error():
    with pytest.raises(UserInputError, match="shape"):
        distillation_loss(torch.zeros(2, 3), torch.zeros(2, 4), None)


def _toy():
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    student = nn.Sequential(nn.Linear(8, 4))
    x = torch.randn(256, 8)
    with torch.no_grad():
        y = teacher(x).argmax(1)
    return teacher, student, x, y


def test_distillation_reduces_loss_on_a_toy_problem():
    teacher, student, x, y = _toy()
    teacher.train()
    teacher_state = copy.deepcopy(teacher.state_dict())
    with torch.no_grad():
        before = float(distillation_loss(student(x), teacher(x), y))
    history = finetune_with_distillation(student, teacher, (x, y), epochs=5, lr=0.05, batch_size=32)
    assert len(history) == 5 and all(math.isfinite(h) for h in history)
    assert history[-1] < history[0]
    with torch.no_grad():
        after = float(distillation_loss(student(x), teacher(x), y))
        agreement = float((student(x).argmax(1) == y).float().mean())
    assert after < 0.7 * before
    assert agreement > 0.6
    assert teacher.training and not student.training  # teacher's mode restored, student left in eval
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, teacher_state[key])


def test_accepts_a_data_loader():
    teacher, student, x, y = _toy()
    loader = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True)
    history = finetune_with_distillation(student, teacher, loader, epochs=3, lr=0.05, T=2.0, alpha=0.5)
    assert len(history) == 3 and history[-1] < history[0]


def test_distills_a_pruned_zoo_model_one_step():
    from pipeline.models.registry import ModelSpec, build
    from pipeline.pruning import PruneConfig, prune_unstructured

    torch.manual_seed(0)
    teacher = build(ModelSpec("mobilenet_v1", 0.25, 32, 10))
    student = copy.deepcopy(teacher)
    prune_unstructured(student, PruneConfig(0.5, mode="unstructured"))
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    history = finetune_with_distillation(student, teacher, (x, y), epochs=1, lr=1e-3, batch_size=4)
    assert len(history) == 1 and math.isfinite(history[0])


@pytest.mark.parametrize(
    "kwargs, word",
    [({"epochs": 0}, "epochs"), ({"epochs": 1, "lr": 0.0}, "learning rate"),
     ({"epochs": 1, "T": -1.0}, "temperature")],
)
def test_bad_training_settings_are_clear_errors(kwargs, word):
    teacher, student, x, y = _toy()
    with pytest.raises(UserInputError, match=word):
        finetune_with_distillation(student, teacher, (x, y), **kwargs)


def test_bad_data_is_a_clear_error():
    teacher, student, x, y = _toy()
    with pytest.raises(UserInputError, match="labels"):
        finetune_with_distillation(student, teacher, (x, y[:10]), epochs=1)
    with pytest.raises(UserInputError, match="no training"):
        finetune_with_distillation(student, teacher, (x[:0], y[:0]), epochs=1)
    with pytest.raises(UserInputError, match="re-iterable"):
        finetune_with_distillation(student, teacher, iter([(x, y)]), epochs=1)
    with pytest.raises(UserInputError, match="no training"):
        finetune_with_distillation(student, teacher, [], epochs=1)
