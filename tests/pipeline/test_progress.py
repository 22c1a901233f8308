"""Training progress: one line per epoch on stderr without a live display; a sink (the CLI's
terminal display) gets the per-batch updates and the lines instead."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from pipeline.finetune import TrainConfig, train
from pipeline.progress import use_sink


class _Linear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def _data():
    rng = np.random.default_rng(0)
    y = np.arange(100) % 10
    x = (rng.normal(size=(100, 3, 4, 4)) + y[:, None, None, None]).astype(np.float32)
    return x, y


def test_without_a_display_each_epoch_is_one_line_on_stderr(capsys) -> None:
    x, y = _data()
    train(_Linear(), x, y, x, y, TrainConfig(epochs=2))
    lines = capsys.readouterr().err.splitlines()
    assert [line.split("  ")[0] for line in lines] == ["finetune: epoch 1/2", "finetune: epoch 2/2"]
    assert all("loss" in line and "validation accuracy" in line for line in lines)


class _Recorder:
    def __init__(self) -> None:
        self.updates: list[tuple[int, str]] = []
        self.lines: list[str] = []
        self.totals: list[int] = []
        self.closed = 0

    def task(self, title: str, total: int) -> "_Recorder":
        self.totals.append(total)
        return self

    def update(self, completed: int, text: str) -> None:
        self.updates.append((completed, text))

    def line(self, text: str) -> None:
        self.lines.append(text)

    def close(self) -> None:
        self.closed += 1


def test_a_sink_gets_every_batch_and_every_epoch(capsys) -> None:
    x, y = _data()
    sink = _Recorder()
    with use_sink(sink):
        train(_Linear(), x, y, x, y, TrainConfig(epochs=2))
    assert sink.totals == [2 * 4]                         # 100 images, batches of 32
    assert [done for done, _ in sink.updates] == list(range(1, 9))
    assert len(sink.lines) == 2 and sink.closed == 1
    assert capsys.readouterr().err == ""
