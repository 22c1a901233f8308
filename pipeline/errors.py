"""Typed errors and the exit codes the CLI maps them to (a contract users' scripts rely on)."""
from __future__ import annotations

EXIT_OK = 0
EXIT_PARITY_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_TARGET_UNAVAILABLE = 3


class MobileExportError(Exception):
    """Base class; ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class UserInputError(MobileExportError, ValueError):
    """Bad input from the user: one line saying what is wrong and what to do."""

    exit_code = EXIT_BAD_INPUT


class TargetUnavailableError(MobileExportError):
    """A requested target cannot run on this machine (missing runtime, hardware or converter)."""

    exit_code = EXIT_TARGET_UNAVAILABLE


class StageError(MobileExportError):
    """A stage failed while running; names the stage and the cause. ``record``: what the stage
    measured before it failed (e.g. the training epochs so far), kept in its report node."""

    def __init__(self, stage: str, message: str, record: dict | None = None) -> None:
        super().__init__(f"stage '{stage}' failed: {message}")
        self.stage = stage
        self.record = record or {}
