"""Run a heavy converter call (TensorFlow, onnx2tf, coremltools) in a child process with a timeout.

Those libraries can crash the interpreter (a segfault in a C++ kernel), hang, or exhaust memory;
in the child that costs one stage, not the run. A crash, a non-zero exit or a timeout becomes an
:class:`IsolatedCallError` naming the stage, the model, and the last lines the converter printed.

Contract: ``run_isolated("package.module:function", {json kwargs}, ...)`` calls
``function(**kwargs)`` in a fresh interpreter and returns its JSON-serialisable result.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from collections import deque
from pathlib import Path
from typing import Any

from pipeline.errors import StageError

TAIL_LINES = 25


class IsolatedCallError(StageError):
    """The isolated call crashed, failed or timed out; ``tail`` holds its last output lines.

    ``error`` is the child's own account when the function raised: ``{"type", "message",
    "user_input"}`` (``user_input``: the exception was a :class:`UserInputError`)."""

    def __init__(self, stage: str, model: str, problem: str, tail: list[str],
                 error: dict[str, Any] | None = None) -> None:
        shown = "\n    ".join(tail) if tail else "(no output)"
        super().__init__(stage, f"{problem} while converting {model}; last output:\n    {shown}")
        self.problem = problem
        self.tail = tail
        self.error = error


def _tail(path: Path) -> list[str]:
    with open(path, errors="replace") as handle:
        return [line.rstrip() for line in deque(handle, maxlen=TAIL_LINES) if line.strip()]


def run_isolated(target: str, kwargs: dict[str, Any], *, stage: str, model: str,
                 timeout_s: float, env: dict[str, str] | None = None,
                 what: str = "converter") -> Any:
    """Call ``target`` (``module:function``) with ``kwargs`` in a child process; ``what`` names
    the child in errors (the converter, the runtime)."""
    with tempfile.TemporaryDirectory(prefix="mobile-export-isolate-") as tmp:
        request, result, log = Path(tmp, "request.json"), Path(tmp, "result.json"), \
            Path(tmp, "output.log")
        request.write_text(json.dumps({"target": target, "kwargs": kwargs}))
        child_env = {**os.environ, **(env or {})}
        child_env.setdefault("PYTHONPATH", os.pathsep.join(p for p in sys.path if p))
        with open(log, "wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "pipeline.isolate", str(request),
                                     str(result)], stdout=out, stderr=subprocess.STDOUT,
                                    env=child_env, start_new_session=True)
            try:
                code = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                raise IsolatedCallError(stage, model, f"timed out after {timeout_s:.0f} s",
                                        _tail(log)) from None
        if code < 0:
            name = signal.Signals(-code).name
            raise IsolatedCallError(stage, model, f"the {what} process crashed ({name})",
                                    _tail(log))
        reply = json.loads(result.read_text()) if result.is_file() else {}
        if code != 0 or "result" not in reply:
            error = reply.get("error")
            problem = (f"{error['type']}: {error['message']}" if error else
                       f"the {what} exited with code {code}")
            raise IsolatedCallError(stage, model, problem, _tail(log), error)
        return reply["result"]


def run_on_users_file(target: str, kwargs: dict[str, Any], *, command: str, path: Path,
                      timeout_s: float) -> Any:
    """:func:`run_isolated` for a command run on a file the user handed in (``verify``,
    ``localise``): the child's own UserInputError comes back as one; a crash, a hang or any
    other failure as one UserInputError line naming the file."""
    from pipeline.errors import UserInputError

    try:
        return run_isolated(target, kwargs, stage=command, model=path.name, timeout_s=timeout_s,
                            what="runtime")
    except IsolatedCallError as exc:
        if exc.error and exc.error.get("user_input"):
            raise UserInputError(exc.error["message"]) from None
        raise UserInputError(f"{path.name} cannot be checked ({command}): {exc.problem}; pass "
                             "an artifact this tool wrote") from None


def _child(request_path: str, result_path: str) -> int:
    import importlib
    import traceback

    from pipeline.errors import UserInputError

    request = json.loads(Path(request_path).read_text())
    module_name, function_name = request["target"].split(":")
    try:
        function = getattr(importlib.import_module(module_name), function_name)
        reply: dict[str, Any] = {"result": function(**request["kwargs"])}
        code = 0
    except Exception as exc:  # reported through the parent's typed error
        traceback.print_exc()
        print(f"{type(exc).__name__}: {exc}", flush=True)
        reply = {"error": {"type": type(exc).__name__, "message": str(exc)[:2000],
                           "user_input": isinstance(exc, UserInputError)}}
        code = 1
    tmp = Path(result_path + ".tmp")
    tmp.write_text(json.dumps(reply, default=str))
    os.replace(tmp, result_path)
    return code


if __name__ == "__main__":
    raise SystemExit(_child(sys.argv[1], sys.argv[2]))
