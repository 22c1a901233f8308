"""The CLI on unwritable outputs, crafted reports and artifacts, and failed checks: one clear line
(exit 2) for bad input, and a failed node's reason on the console."""
from __future__ import annotations

import errno
import json
import os
import re
import shutil
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from pipeline import cli
from pipeline.cli import app
from pipeline.errors import EXIT_BAD_INPUT


def _plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def _one_line(result) -> str:
    assert result.exit_code == EXIT_BAD_INPUT, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    lines = [line for line in _plain(result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def _run(tmp_path: Path, out: Path, artifacts: Path | None = None):
    return CliRunner().invoke(app, [
        "run", "--model", "mobilenet_v2", "--width", "0.35", "--resolution", "64",
        "--artifacts-dir", str(artifacts or tmp_path / "artifacts"), "--out", str(out)])


def test_an_out_folder_under_a_file_is_refused_before_anything_is_written(tmp_path) -> None:
    (tmp_path / "a_file").write_text("x")
    line = _one_line(_run(tmp_path, tmp_path / "a_file" / "report"))
    assert "--out" in line and "is a file, not a folder" in line
    assert not (tmp_path / "artifacts").exists()


def test_an_artifacts_folder_under_a_file_is_refused(tmp_path) -> None:
    (tmp_path / "a_file").write_text("x")
    line = _one_line(_run(tmp_path, tmp_path / "r", tmp_path / "a_file" / "artifacts"))
    assert "--artifacts-dir" in line and not (tmp_path / "r").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only folder, so "
                    "for root such a folder is writable and the run goes ahead")
def test_a_read_only_out_folder_is_refused(tmp_path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert "read-only" in _one_line(_run(tmp_path, locked / "report"))
    finally:
        locked.chmod(0o700)


def test_a_nearly_full_disk_is_refused_up_front(tmp_path, monkeypatch) -> None:
    import pipeline.files

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(pipeline.files.shutil, "disk_usage",
                        lambda path: usage._replace(free=5 << 20))
    assert "5 MiB free" in _one_line(_run(tmp_path, tmp_path / "r"))


def test_a_disk_that_fills_during_a_run_is_one_line(capsys) -> None:
    def body() -> int:
        raise OSError(errno.ENOSPC, "No space left on device", "/data/report.json")

    with pytest.raises(typer.Exit) as exited:
        cli._guard(False, body)
    assert exited.value.exit_code == EXIT_BAD_INPUT
    lines = [line for line in _plain(capsys.readouterr().err).splitlines() if line.strip()]
    assert lines == ["error: cannot write /data/report.json: No space left on device; free "
                     "space or pass --out / --artifacts-dir a folder on another disk"]


def _report_copy(tiny_run, tmp_path: Path, change=None) -> Path:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    report = json.loads((tiny_run.out_dir / "report.json").read_text())
    if change:
        change(report)
    (run_dir / "report.json").write_text(json.dumps(report))
    return run_dir


@pytest.mark.parametrize("change", [
    lambda r: r.update(nodes=[{"name": "x"}]),
    lambda r: r["nodes"][0].update(latency={"median_ms": "fast"}),
    lambda r: r.update(exit_code="zero"),
])
def test_report_on_a_report_of_the_wrong_shape_is_one_line(tiny_run, tmp_path, change) -> None:
    run_dir = _report_copy(tiny_run, tmp_path, change)
    line = _one_line(CliRunner().invoke(app, ["report", str(run_dir)]))
    assert "report.json's shape" in line


def test_verify_on_a_file_that_is_not_onnx_is_one_line(tiny_run, tmp_path) -> None:
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"\x08\x07garbage\xff")
    line = _one_line(CliRunner().invoke(app, ["verify", str(bad), "--run",
                                              str(tiny_run.out_dir)]))
    assert "model.onnx" in line


def test_a_node_that_failed_its_check_says_why_on_the_console(tiny_run, monkeypatch) -> None:
    from pipeline.run import RunOutcome

    report = json.loads((tiny_run.out_dir / "report.json").read_text())
    node = next(n for n in report["nodes"] if n["name"] == "export_onnx")
    node["parity"].update(verdict="fail", reason="reference has NaN/Inf values")
    report["exit_code"] = 1
    monkeypatch.setattr("pipeline.run.execute",
                        lambda config, progress=None: RunOutcome(report, tiny_run.out_dir, 1))
    result = CliRunner().invoke(app, ["run", "--model", "mobilenet_v2", "--width", "0.35",
                                      "--resolution", "64", "--out",
                                      str(tiny_run.out_dir)])
    assert result.exit_code == 1
    assert "export_onnx failed its check: reference has NaN/Inf values" in _plain(result.stderr)
