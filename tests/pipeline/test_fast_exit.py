"""The CLI's exit: sys.exit's status and flushing and atexit handlers, without the teardown."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.fast_exit import exit_status


@pytest.mark.parametrize("code, status", [(None, 0), (0, 0), (2, 2), (True, 1), (300, 1),
                                          (-1, 1), ("a message", 1)])
def test_status_is_what_sys_exit_gives(code, status, capsys) -> None:
    assert exit_status(code) == status
    assert ("a message" in capsys.readouterr().err) == (code == "a message")


def test_handlers_run_and_buffered_output_arrives(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    code = (f"import atexit, pathlib, sys\n"
            f"atexit.register(lambda: pathlib.Path({str(marker)!r}).write_text('ran'))\n"
            f"from pipeline.fast_exit import exit_now\n"
            f"sys.stdout.write('x' * 100000)\n"
            f"sys.stderr.write('err')\n"
            f"exit_now(3)\n"
            f"print('never')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 3
    assert done.stdout == "x" * 100000 and done.stderr == "err"
    assert marker.read_text() == "ran"


def test_the_command_line_exits_with_its_status(tmp_path: Path) -> None:
    ok = subprocess.run([sys.executable, "-m", "pipeline.cli", "zoo", "--format", "json"],
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and ok.stdout.rstrip().endswith("]")
    bad = subprocess.run([sys.executable, "-m", "pipeline.cli", "zoo", "--format", "xml"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "error:" in bad.stderr
