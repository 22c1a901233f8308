"""sweep.json / sweep.md / sweep.html from hand-made rows (the pipeline is not run)."""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from pipeline.sweep.report import write_sweep_report

MACHINE = {"platform": "Linux-6.1-x86_64", "system": "Linux", "arch": "x86_64",
           "python": "3.11.2", "python_implementation": "CPython",
           "cpu_model": "Test CPU 3000", "cpu_int8": {"flags": ["avx2"], "int8_dot_product": False},
           "logical_cores": 8, "usable_cores": 4, "memory_gib": 16.0,
           "versions": {"numpy": "2.0"}}


def node(target: str, precision: str, acc: float | None, median: float | None, size: int, *,
         verdict: str = "pass") -> dict[str, Any]:
    return {"target": target, "precision": precision, "runtime": target, "verdict": verdict,
            "reason": None if verdict == "pass" else "cosine 0.81 < 0.99",
            "size_bytes": size,
            "accuracy": None if acc is None else {"value": acc, "ci_low": acc - 0.02,
                                                  "ci_high": acc + 0.02},
            "latency_ms": None if median is None else {"median": median, "p90": median * 1.2},
            "fps": None if median is None else 1000.0 / median, "peak_memory_mb": 40.0,
            "pareto": False}


def row(job: str, status: str, nodes: dict[str, Any], tmp: Path, *, reason: str | None = None,
        machine: dict[str, Any] | None = None) -> dict[str, Any]:
    model, width, resolution = job.split("-")
    return {"job": job,
            "config": {"model": model, "width": float(width[1:]), "resolution": int(resolution[1:]),
                       "nas": None, "finetune_epochs": 0, "targets": ["tflite", "onnx"],
                       "precisions": ["fp32", "int8"]},
            "status": status, "reason": reason, "cached": False, "seconds": 12.5,
            "machine": machine or MACHINE, "run_dir": str(tmp / "runs" / job),
            "params": 470_000 if status == "ok" else None, "macs": 14_000_000,
            "accuracy": {"value": 0.7, "ci_low": 0.68, "ci_high": 0.72}, "nodes": nodes}


def sweep_rows(tmp: Path, with_accuracy: bool = True) -> list[dict[str, Any]]:
    def acc(value: float) -> float | None:
        return value if with_accuracy else None

    return [
        row("mobilenet_v1-w1.0-r224", "gate_failed",
            {"tflite:int8": node("tflite", "int8", acc(0.30), 8.0, 4_300_000, verdict="fail"),
             "onnx:fp32": node("onnx", "fp32", acc(0.74), 20.0, 17_000_000)}, tmp,
            reason="tflite:int8 failed its parity gate"),
        row("mobilenet_v1-w0.25-r128", "ok",
            {"tflite:int8": node("tflite", "int8", acc(0.60), 2.0, 500_000),
             "onnx:fp32": node("onnx", "fp32", acc(0.62), 4.0, 1_900_000)}, tmp),
        row("mobilenet_v2-w1.0-r224", "failed", {}, tmp, reason="conversion crashed: bad op"),
        row("mobilenet_v1-w0.5-r160", "ok",
            {"tflite:int8": node("tflite", "int8", acc(0.68), 5.0, 1_400_000),
             "onnx:fp32": node("onnx", "fp32", acc(0.70), 9.0, 5_300_000)}, tmp),
    ]


def picks(doc: dict[str, Any], key: str) -> dict[str, Any]:
    return {p["criterion"]: p for p in doc["recommendations"][key]["picks"]}


def test_the_three_files_and_the_json_document(tmp_path: Path) -> None:
    rows = sweep_rows(tmp_path)
    before = copy.deepcopy(rows)
    doc = write_sweep_report(rows, tmp_path / "out", latency_budget_ms=6.0, title="v1 grid")
    assert rows == before                                   # the caller's rows are not changed
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == \
        ["sweep.html", "sweep.json", "sweep.md"]
    stored = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert stored == doc
    assert (stored["schema"], stored["title"], stored["latency_budget_ms"]) == (1, "v1 grid", 6.0)
    assert stored["machine"] == MACHINE
    assert [r["job"] for r in stored["rows"]] == sorted(r["job"] for r in rows)
    summary = stored["summary"]
    assert (summary["jobs"], summary["ok"], summary["gate_failed"], summary["failed"]) == (4, 2, 1, 1)
    assert summary["node_keys"] == ["onnx:fp32", "tflite:int8"]
    # the failed tflite:int8 node of the gate_failed job is off the front; its onnx node is on it
    assert summary["pareto"] == {
        "onnx:fp32": ["mobilenet_v1-w0.25-r128", "mobilenet_v1-w0.5-r160", "mobilenet_v1-w1.0-r224"],
        "tflite:int8": ["mobilenet_v1-w0.25-r128", "mobilenet_v1-w0.5-r160"]}


def test_recommendations_for_a_budget_and_a_frame_rate(tmp_path: Path) -> None:
    doc = write_sweep_report(sweep_rows(tmp_path), tmp_path, latency_budget_ms=6.0)
    tflite = picks(doc, "tflite:int8")
    assert tflite["most accurate within median ≤ 6 ms"]["job"] == "mobilenet_v1-w0.5-r160"
    assert tflite["fastest"]["job"] == tflite["smallest"]["job"] == "mobilenet_v1-w0.25-r128"
    assert tflite["most accurate"]["job"] == "mobilenet_v1-w0.5-r160"   # the 0.30 one failed
    assert tflite["fastest"]["figures"]["median_ms"] == 2.0
    assert tflite["fastest"]["figures"]["machine"].startswith("Test CPU 3000, 4 cores")
    onnx = picks(doc, "onnx:fp32")
    assert onnx["most accurate within median ≤ 6 ms"]["job"] == "mobilenet_v1-w0.25-r128"
    assert onnx["most accurate"]["job"] == "mobilenet_v1-w1.0-r224"      # gate_failed row counts
    assert doc["recommendations"]["onnx:fp32"]["note"] is None

    by_fps = write_sweep_report(sweep_rows(tmp_path), tmp_path, target_fps=100.0)  # 10 ms
    assert picks(by_fps, "onnx:fp32")["most accurate within ≥ 100 FPS"]["job"] == \
        "mobilenet_v1-w0.5-r160"

    tight = write_sweep_report(sweep_rows(tmp_path), tmp_path, latency_budget_ms=1.0)
    none = picks(tight, "tflite:int8")["most accurate within median ≤ 1 ms"]
    assert none["job"] is None and "mobilenet_v1-w0.25-r128, takes 2 ms" in none["reason"]


def test_markdown_has_the_comparison_table_failures_and_recommendations(tmp_path: Path) -> None:
    write_sweep_report(sweep_rows(tmp_path), tmp_path, latency_budget_ms=6.0)
    md = (tmp_path / "sweep.md").read_text()
    assert "| job | model | α | ρ | params | MACs | verdict | accuracy | median ms |" in md
    assert "| mobilenet_v1-w0.5-r160 | mobilenet_v1 | 0.5 | 160 | 470000 | 14000000 | pass | " \
           "68.0 % (66.0–70.0) | 5.00 | 6.00 | 200.0 | 1.34 MiB | 40.0 | ★ |" in md
    assert "| mobilenet_v1-w1.0-r224 | mobilenet_v1 | 1 | 224 | — | 14000000 | fail |" in md
    assert "- **mobilenet_v2-w1.0-r224** — failed: conversion crashed: bad op" in md
    assert "- most accurate within median ≤ 6 ms: mobilenet_v1-w0.5-r160 — accuracy 68.0 %" in md
    assert "latency budget 6 ms" in md and "measured on: Test CPU 3000" in md


def test_html_embeds_one_plot_per_node_key(tmp_path: Path) -> None:
    write_sweep_report(sweep_rows(tmp_path), tmp_path / "out", latency_budget_ms=6.0)
    html = (tmp_path / "out" / "sweep.html").read_text()
    assert html.count("<svg") == 2
    assert html.index("<h2>onnx:fp32</h2>") < html.index("<svg") < html.index("<h2>tflite:int8</h2>")
    assert "budget 6 ms" in html                         # the legend of the budget line
    assert "mobilenet_v1-w0.5-r160" in html.split("<svg")[1]      # job labels in the plot
    assert 'href="../runs/mobilenet_v1-w0.25-r128/report.html"' in html
    assert "conversion crashed: bad op" in html


def test_same_rows_give_the_same_bytes(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    write_sweep_report(sweep_rows(tmp_path), first, latency_budget_ms=6.0, target_fps=30.0)
    write_sweep_report(list(reversed(sweep_rows(tmp_path))), second, latency_budget_ms=6.0,
                       target_fps=30.0)
    for name in ("sweep.json", "sweep.md", "sweep.html"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_rows_without_accuracy_plot_size_against_latency(tmp_path: Path) -> None:
    doc = write_sweep_report(sweep_rows(tmp_path, with_accuracy=False), tmp_path,
                             latency_budget_ms=6.0)
    assert doc["summary"]["front_axes"] == {"onnx:fp32": "size", "tflite:int8": "size"}
    tflite = picks(doc, "tflite:int8")
    assert tflite["most accurate"]["job"] is None
    assert "accuracy was not measured" in tflite["most accurate"]["reason"]
    assert tflite["most accurate within median ≤ 6 ms"]["job"] is None
    assert tflite["fastest"]["job"] == "mobilenet_v1-w0.25-r128"
    html = (tmp_path / "sweep.html").read_text()
    assert html.count("<svg") == 2 and "accuracy not measured" in html
    assert "artifact size, MiB" in html


def test_a_sweep_where_every_job_failed(tmp_path: Path) -> None:
    rows = [row("mobilenet_v1-w0.25-r128", "failed", {}, tmp_path, reason="out of memory"),
            row("mobilenet_v1-w0.5-r160", "timeout", {}, tmp_path, reason="ran past 600 s")]
    doc = write_sweep_report(rows, tmp_path, latency_budget_ms=5.0)
    assert doc["recommendations"] == {} and doc["summary"]["failed"] == 1
    assert doc["summary"]["timeout"] == 1 and doc["summary"]["pareto"] == {}
    md = (tmp_path / "sweep.md").read_text()
    assert "No job produced a node to compare." in md and "ran past 600 s" in md
    html = (tmp_path / "sweep.html").read_text()
    assert "<svg" not in html and "out of memory" in html


def test_different_machines_are_named_in_the_note(tmp_path: Path) -> None:
    rows = sweep_rows(tmp_path)
    rows[1]["machine"] = {**MACHINE, "cpu_model": "Other CPU", "logical_cores": 2,
                          "usable_cores": 2}
    doc = write_sweep_report(rows, tmp_path)
    assert doc["machine"] is None and doc["summary"]["machines"] == 2
    note = doc["recommendations"]["onnx:fp32"]["note"]
    assert "2 different machines" in note and "Other CPU" in note
    assert "measured on Other CPU" in (tmp_path / "sweep.md").read_text()


def test_a_budget_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="target_fps"):
        write_sweep_report(sweep_rows(tmp_path), tmp_path, target_fps=0.0)
    assert not (tmp_path / "sweep.json").exists()
