"""SIGKILL at any point, then a rerun: the published files are byte-identical to a clean run's
and no temp file is left anywhere the tool writes.

Where each kill lands depends on the machine's speed; what is asserted does not: it must hold
for a kill at any moment. The deterministic half (a dead process's temp files are swept on the
next write) is tested directly in test_cache.py and below.
"""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ARGS = ["--model", "mobilenet_v2", "--width", "0.35", "--resolution", "64", "--num-classes",
        "10", "--targets", "onnx", "--precisions", "fp32", "--threads", "1"]


def _command(root: Path) -> list[str]:
    return [sys.executable, "-m", "pipeline.cli", "run", *ARGS,
            "--artifacts-dir", str(root / "artifacts"), "--out", str(root / "report")]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def _published(root: Path) -> dict[str, str]:
    folder = root / "artifacts" / "onnx"
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _leftovers(root: Path) -> list[str]:
    return [str(p.relative_to(root)) for p in root.rglob("*")
            if p.name.endswith(".tmp") or p.name.startswith(".work-")]


@pytest.mark.slow
def test_a_killed_run_then_a_rerun_publishes_the_same_bytes_and_leaves_no_temp_files(
        tmp_path: Path) -> None:
    clean = tmp_path / "clean"
    started = time.perf_counter()
    subprocess.run(_command(clean), env=_env(), check=True, capture_output=True, timeout=900)
    duration = time.perf_counter() - started
    expected = _published(clean)
    assert expected and not _leftovers(clean)

    killed = tmp_path / "killed"
    for fraction in (0.35, 0.7, 0.9, 0.97):   # each run starts from what the last one cached
        proc = subprocess.Popen(_command(killed), env=_env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            proc.wait(timeout=fraction * duration)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    subprocess.run(_command(killed), env=_env(), check=True, capture_output=True, timeout=900)
    assert _published(killed) == expected
    assert not _leftovers(killed)


def test_temp_files_a_killed_write_left_are_swept_by_the_next_run(tiny_run) -> None:
    """Planted leftovers of a dead process beside the published files and the report."""
    from pipeline.config import PipelineConfig
    from pipeline.run import execute

    pid = 4194305   # above Linux's largest pid_max (2**22): no process can have it
    config = PipelineConfig.model_validate(tiny_run.report["run"]["config"])
    published = next(Path(n["artifact"]["path"]) for n in tiny_run.report["nodes"]
                     if n["name"] == "export_onnx")
    before = published.read_bytes()
    planted = [published.parent / f".{published.name}.{pid}.abcdefgh.tmp",
               tiny_run.out_dir / f".report.json.{pid}.abcdefgh.tmp",
               config.cache_dir / f".work-export_onnx-{pid}-abcdefgh"]
    for path in planted[:2]:
        path.write_bytes(b"half a file")
    planted[2].mkdir()
    execute(config)
    assert not any(path.exists() for path in planted)
    assert published.read_bytes() == before
