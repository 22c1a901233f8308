"""Isolated converter calls: results come back; crashes, failures and hangs become typed errors."""
from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from pipeline.isolate import IsolatedCallError, run_isolated

REPO = Path(__file__).resolve().parents[2]

FIXTURES = textwrap.dedent("""
    import os, time

    def add(a, b):
        return {"sum": a + b}

    def fail(text):
        raise ValueError(f"converter says no: {text}")

    def refuse():
        from pipeline.errors import UserInputError
        raise UserInputError("that file is not a model; pass another")

    def crash():
        print("about to abort", flush=True)
        os.abort()

    def hang():
        time.sleep(600)
""")


@pytest.fixture()
def call(tmp_path: Path):
    (tmp_path / "isolate_fixtures.py").write_text(FIXTURES)
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}

    def run(name: str, timeout_s: float = 120, **kwargs):
        return run_isolated(f"isolate_fixtures:{name}", kwargs, stage="tflite:fp32",
                            model="mnv2", timeout_s=timeout_s, env=env)

    return run


def test_result_comes_back(call) -> None:
    assert call("add", a=2, b=3) == {"sum": 5}


def test_exception_names_stage_model_and_output(call) -> None:
    with pytest.raises(IsolatedCallError) as info:
        call("fail", text="Unsupported op: GridSample")
    message = str(info.value)
    assert "tflite:fp32" in message and "mnv2" in message
    assert "ValueError: converter says no: Unsupported op: GridSample" in message
    # the child's own account comes back as one structured value
    assert info.value.error == {"type": "ValueError", "user_input": False,
                                "message": "converter says no: Unsupported op: GridSample"}


def test_a_user_input_error_in_the_child_says_so(call) -> None:
    with pytest.raises(IsolatedCallError) as info:
        call("refuse")
    assert info.value.error["user_input"] is True
    assert info.value.error["message"] == "that file is not a model; pass another"


def test_crash_is_reported_with_the_signal(call) -> None:
    with pytest.raises(IsolatedCallError, match=r"crashed \(SIGABRT\)") as info:
        call("crash")
    assert "about to abort" in info.value.tail


def test_hang_is_killed_at_the_timeout(call) -> None:
    with pytest.raises(IsolatedCallError, match="timed out after 2 s"):
        call("hang", timeout_s=2)
