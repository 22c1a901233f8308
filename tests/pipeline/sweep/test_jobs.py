"""A run's report -> the sweep row; the bench slots that keep timings apart."""
from __future__ import annotations

import threading
import time

import pytest

from pipeline.bench import BENCH_SLOTS_ENV, timing_slot
from pipeline.sweep.jobs import ensure_slots, export_options, failure_row, result_row

JOB = {"id": "mobilenet_v1-w0.35-r64", "model": "mobilenet_v1", "width": 0.35,
       "resolution": 64, "nas": None}


@pytest.fixture
def settings(tmp_path):
    return {"targets": ["onnx", "tflite"], "precisions": ["fp32", "int8"], "dataset": "digits",
            "finetune_epochs": 1, "options": {}, "artifacts_dir": str(tmp_path / "art"),
            "runs_dir": str(tmp_path / "runs"), "bench_slots": 1, "slots_dir": None}


def _node(name, target, precision, verdict="pass", cached=True, **extra):
    return {"name": name, "stage": name, "target": target, "precision": precision,
            "status": "cached" if cached else "ran", "cached": cached,
            "artifact": {"path": "x", "sha256": "0" * 64, "bytes": 1234},
            "parity": {"verdict": verdict, "reason": f"{name} reason"},
            "latency": {"runtime": "rt", "median_ms": 2.0, "p90_ms": 2.5, "batch": 1,
                        "throughput_ips": 500.0, "peak_rss_mb": 600.0}, **extra}


def _report(*nodes):
    return {"model": {"params": 410471, "macs": 6134744}, "machine": {"cpu_model": "X"},
            "nodes": list(nodes)}


def test_an_ok_run_maps_every_field(settings):
    accuracy = {"value": 0.9, "ci_low": 0.85, "ci_high": 0.93, "delta": 0.0}
    report = _report(_node("load", "torch", "fp32", accuracy=accuracy),
                     _node("export_onnx", "onnx", "fp32", accuracy={**accuracy, "value": 0.89}),
                     _node("tflite:int8", "tflite", "int8"))
    row = result_row(JOB, settings, report, 0, 12.3456)
    assert row["status"] == "ok" and row["reason"] is None and row["cached"] is True
    assert row["params"] == 410471 and row["macs"] == 6134744
    assert row["accuracy"] == {"value": 0.9, "ci_low": 0.85, "ci_high": 0.93}
    assert row["machine"] == {"cpu_model": "X"} and row["seconds"] == 12.346
    assert row["config"] == {"model": "mobilenet_v1", "width": 0.35, "resolution": 64,
                             "nas": None, "finetune_epochs": 1, "targets": ["onnx", "tflite"],
                             "precisions": ["fp32", "int8"]}
    assert set(row["nodes"]) == {"onnx:fp32", "tflite:int8"}
    onnx = row["nodes"]["onnx:fp32"]
    assert onnx == {"target": "onnx", "precision": "fp32", "runtime": "rt", "verdict": "pass",
                    "reason": "export_onnx reason", "size_bytes": 1234,
                    "accuracy": {"value": 0.89, "ci_low": 0.85, "ci_high": 0.93},
                    "latency_ms": {"median": 2.0, "p90": 2.5}, "fps": 500.0,
                    "peak_memory_mb": None, "pareto": False}
    assert row["nodes"]["tflite:int8"]["accuracy"] is None
    assert row["run_dir"].endswith("runs/mobilenet_v1-w0.35-r64")


def test_gate_failures_and_unavailable_targets(settings):
    report = _report(_node("load", "torch", "fp32", cached=False),
                     _node("tflite:int8", "tflite", "int8", verdict="fail"))
    row = result_row(JOB, settings, report, 1, 1.0)
    assert row["status"] == "gate_failed" and row["cached"] is False
    assert row["reason"] == "tflite:int8: tflite:int8 reason"
    unavailable = {**_node("coreml:fp32", "coreml", "fp32", verdict="unverified"),
                   "status": "unavailable"}
    row = result_row(JOB, settings, _report(_node("load", "torch", "fp32"), unavailable), 3, 1.0)
    assert row["status"] == "failed" and "coreml unavailable" in row["reason"]


def test_failure_rows_have_the_shape_and_no_figures(settings):
    row = failure_row(JOB, settings, "timeout", "exceeded", 5.0)
    assert row["status"] == "timeout" and row["nodes"] == {} and row["accuracy"] is None
    with pytest.raises(AssertionError):
        failure_row(JOB, settings, "weird", "x", 1.0)


def test_export_options(settings):
    nas = {**JOB, "model": "mobilenet_nas",
           "nas": {"depth_multiplier": 0.75, "kernel_size": 5, "activation": "swish"}}
    options = export_options(nas, settings)
    assert options["nas"] == nas["nas"] and options["threads"] == 1
    assert options["dataset"] == "digits" and options["num_classes"] == 10
    assert "nas" not in export_options(JOB, settings)


def test_one_slot_lets_one_timing_run_at_a_time(tmp_path, monkeypatch):
    monkeypatch.setenv(BENCH_SLOTS_ENV, str(ensure_slots(tmp_path / "slots", 1)))
    inside, overlaps = [], []

    def timed():
        with timing_slot():
            inside.append(1)
            overlaps.append(len(inside))
            time.sleep(0.1)
            inside.pop()

    threads = [threading.Thread(target=timed) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert overlaps == [1, 1, 1]
    assert sorted(p.name for p in (tmp_path / "slots").iterdir()) == ["slot-0.lock"]
    ensure_slots(tmp_path / "slots", 3)
    ensure_slots(tmp_path / "slots", 2)
    assert sorted(p.name for p in (tmp_path / "slots").iterdir()) == ["slot-0.lock",
                                                                     "slot-1.lock"]
