"""Progress of long steps inside a stage (training epochs): a bar in a terminal, one line per
finished step otherwise.

A front end that owns the terminal (the CLI's live display) installs a :class:`ProgressSink`
with :func:`use_sink`; without one, finished steps are printed to stderr, one line each, and
partial progress is not shown (logs and CI stay readable).
"""
from __future__ import annotations

import contextlib
import sys
from typing import Iterator, Protocol


class Task(Protocol):
    def update(self, completed: int, text: str) -> None:
        """``completed`` of the task's total done; ``text`` says what is going on."""

    def line(self, text: str) -> None:
        """A finished step, kept as a line of output."""

    def close(self) -> None:
        """The task is over (its bar goes)."""


class ProgressSink(Protocol):
    def task(self, title: str, total: int) -> Task:
        """A new task of ``total`` units."""


class _Lines:
    """No live display: finished steps as lines on stderr."""

    def __init__(self, title: str) -> None:
        self.title = title

    def update(self, completed: int, text: str) -> None:
        return None

    def line(self, text: str) -> None:
        print(f"{self.title}: {text}", file=sys.stderr, flush=True)

    def close(self) -> None:
        return None


_sink: ProgressSink | None = None


@contextlib.contextmanager
def use_sink(sink: ProgressSink | None) -> Iterator[None]:
    """Route tasks started inside the block to ``sink``."""
    global _sink
    previous, _sink = _sink, sink
    try:
        yield
    finally:
        _sink = previous


def start_task(title: str, total: int) -> Task:
    """A task on the installed sink, or lines on stderr."""
    return _sink.task(title, total) if _sink is not None else _Lines(title)
