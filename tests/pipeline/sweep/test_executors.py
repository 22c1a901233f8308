"""The sweep end to end on tiny models: local processes and a 2-worker dask LocalCluster, with a
factory that raises, one that hangs past its timeout and (dask) one that kills its worker."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pipeline.sweep.command import sweep_command

MODELS = '''
import os, signal, time

def raises(num_classes=10):
    raise RuntimeError("boom from the factory")

def sleeps(num_classes=10):
    time.sleep(600)

def dies(num_classes=10):
    os.kill(os.getpid(), signal.SIGKILL)
'''


def _sweep_file(folder: Path, name: str, factories: list[str], real: list[int]) -> Path:
    """A sweep of the given factories (first, so a hang overlaps the real jobs) and tiny
    MobileNetV1 jobs at the given resolutions, ONNX fp32 only."""
    models = folder / "models.py"
    models.write_text(MODELS)
    blocks = [f"  - {{model: '{models}:{factory}', width: 0.35, resolution: 64}}"
              for factory in factories]
    blocks += [f"  - {{model: mobilenet_v1, width: 0.35, resolution: {side}}}" for side in real]
    path = folder / f"{name}.yaml"
    path.write_text(f"title: {name}\nspace:\n" + "\n".join(blocks)
                    + "\ntargets: onnx\nprecisions: fp32\n")
    return path


def _rows(out: Path) -> dict[str, dict]:
    doc = json.loads((out / "results.json").read_text())
    assert json.loads((out / "sweep.json").read_text())
    return doc["rows"]


@pytest.fixture(scope="module")
def local_runs(tmp_path_factory):
    """One local sweep of 4 jobs, then its rerun (a shorter timeout: cached jobs are quick)."""
    folder = tmp_path_factory.mktemp("sweep")
    config = _sweep_file(folder, "local", ["sleeps", "raises"], [64, 72])
    common = dict(executor="local", workers=2, out_dir=folder / "out",
                  artifacts_dir=folder / "artifacts")
    first_code = sweep_command(config, job_timeout_s=60, **common)
    first = _rows(folder / "out")
    rerun_code = sweep_command(config, job_timeout_s=15, **common)
    return folder, (first_code, first), (rerun_code, _rows(folder / "out"))


def test_failures_carry_their_reasons_and_the_rest_complete(local_runs):
    _, (code, rows), _ = local_runs
    assert code == 1
    assert rows["models.raises-w0.35-r64"]["status"] == "failed"
    assert "boom from the factory" in rows["models.raises-w0.35-r64"]["reason"]
    assert rows["models.sleeps-w0.35-r64"]["status"] == "timeout"
    assert "60 s" in rows["models.sleeps-w0.35-r64"]["reason"]
    for job in ("mobilenet_v1-w0.35-r64", "mobilenet_v1-w0.35-r72"):
        row = rows[job]
        assert row["status"] == "ok", row["reason"]
        node = row["nodes"]["onnx:fp32"]
        assert node["verdict"] == "pass" and node["latency_ms"]["median"] > 0
        assert 0 < node["peak_memory_mb"] < 4096   # its own interpreter, the runtime alone
        assert node["size_bytes"] > 0 and row["params"] > 0 and row["macs"] > 0
        assert row["machine"]["usable_cores"] >= 1
        assert Path(row["run_dir"], "report.json").is_file()


def test_rerun_is_fully_cached(local_runs):
    _, (_, first), (code, rows) = local_runs
    assert code == 1 and set(rows) == set(first)
    ok = [row for row in rows.values() if row["status"] == "ok"]
    assert len(ok) == 2 and all(row["cached"] for row in ok)
    assert rows["models.sleeps-w0.35-r64"]["status"] == "timeout"


def test_dask_cluster_reports_a_killed_worker_as_that_jobs_failure(local_runs):
    folder, _, _ = local_runs
    config = _sweep_file(folder, "dask", ["dies", "sleeps", "raises"], [64])
    started = time.monotonic()
    code = sweep_command(config, executor="dask", workers=2, job_timeout_s=20,
                         out_dir=folder / "dask-out", artifacts_dir=folder / "artifacts")
    rows = _rows(folder / "dask-out")
    assert code == 1 and time.monotonic() - started < 150
    assert rows["models.dies-w0.35-r64"]["status"] == "failed"
    assert "KilledWorker" in rows["models.dies-w0.35-r64"]["reason"]
    assert rows["models.sleeps-w0.35-r64"]["status"] == "timeout"
    assert "boom from the factory" in rows["models.raises-w0.35-r64"]["reason"]
    ok = rows["mobilenet_v1-w0.35-r64"]
    assert ok["status"] == "ok" and ok["cached"] is True   # the local sweep's cache, shared


def test_ctrl_c_stops_cleanly_and_keeps_finished_rows(tmp_path):
    config = _sweep_file(tmp_path, "stop", ["raises", "sleeps"], [])
    out = tmp_path / "out"
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from pipeline.sweep.command import sweep_command
        sys.exit(sweep_command(Path({str(config)!r}), workers=1, out_dir=Path({str(out)!r}),
                               artifacts_dir=Path({str(tmp_path / 'art')!r})))
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    import psutil

    log = out / "logs" / "models.sleeps-w0.35-r64.log"
    deadline = time.monotonic() + 120
    while not log.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    children = psutil.Process(proc.pid).children(recursive=True)
    assert log.exists() and children
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    kept = _rows(out)
    assert list(kept) == ["models.raises-w0.35-r64"]   # the finished row, not the stopped one
    report = json.loads((out / "sweep.json").read_text())
    assert "interrupted" in json.dumps(report)


def test_a_remote_scheduler_needs_an_absolute_cache(tmp_path, capsys):
    config = _sweep_file(tmp_path, "remote", [], [64])
    code = sweep_command(config, executor="dask", scheduler="tcp://127.0.0.1:1",
                         artifacts_dir=Path("relative/artifacts"), out_dir=tmp_path / "o")
    assert code == 2 and "absolute path" in capsys.readouterr().err
    assert sweep_command(config, executor="threads") == 2
    assert not os.path.exists("relative")
