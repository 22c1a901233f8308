"""report.html: self-contained, escaped, deterministic, with the plots the data allow."""
from __future__ import annotations

import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.report import writer
from pipeline.report.html import render_html, report_plots


def _node(name: str, verdict: str = "pass", **extra) -> dict:
    return {"name": name, "target": "onnx", "status": "ran", "cached": False, "precision": "fp32",
            "artifact": None,
            "parity": {"verdict": verdict, "reason": "r", "max_rel": 2e-7, "cosine": 0.999999,
                       "top1_agreement": 1.0, "failures": [],
                       "tolerance": {"max_rel": 1e-4, "min_cosine": 0.99999}},
            "latency": {"runtime": "onnxruntime", "median_ms": 1.234, "p90_ms": 1.5}, **extra}


def _mixed_node() -> dict:
    layers = {f"t{i}": {"label": f"CONV_2D #{i} (1x8x8x16)", "op": "CONV_2D", "index": i}
              for i in range(3)}
    return _node("tflite:int8", precision="int8",
                 accuracy={"value": 0.95, "ci_low": 0.92, "ci_high": 0.97, "delta": -0.004,
                           "n": 360, "reference": 0.954},
                 warnings=["1 layer(s) kept in float so that int8 passes its gates: CONV_2D #0"],
                 info={"mixed_precision": {
                     "float_layers": ["t0"], "int8_error": 3e-3, "layers": layers,
                     "sensitivity": {"t0": 2e-3, "t1": 1e-4, "t2": 0.0},
                     "cost": {"float_layers": 1, "of_layers": 3, "params_share": 0.1,
                              "macs_share": 0.2, "median_ms": 1.3, "int8_median_ms": 1.2}}})


class _Tags(HTMLParser):
    """Counts start/end tags, and every attribute that would fetch something."""

    VOID = {"meta", "br", "img", "input", "link", "hr", "path", "use", "rect", "line", "stop"}

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.fetching: list[tuple[str, str]] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag, attrs) -> None:
        self.tags.add(tag)
        self.fetching += [(tag, v) for k, v in attrs if k in ("src", "href") and v
                          and not v.startswith("#")]
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_startendtag(self, tag, attrs) -> None:
        self.tags.add(tag)

    def handle_endtag(self, tag) -> None:
        assert self.open and self.open[-1] == tag, (tag, self.open[-5:])
        self.open.pop()


def _parse(text: str) -> _Tags:
    parser = _Tags()
    parser.feed(text)
    parser.close()
    assert parser.open == [], parser.open
    return parser


def test_run_report_renders_every_node_with_plots_and_fetches_nothing(tiny_run) -> None:
    report = tiny_run.report
    text = render_html(report)
    parsed = _parse(text)
    assert "script" not in parsed.tags and "link" not in parsed.tags
    assert parsed.tags >= {"table", "svg", "figure"} and parsed.fetching == []
    assert f"mobile-export report: {report['model']['label']}" in text
    for node in report["nodes"]:
        assert f"<td>{node['name']}</td>" in text
    assert text.count("<svg") == len(report_plots(report["nodes"])) >= 2   # latency, parity
    assert render_html(report) == text                                   # deterministic


def test_user_text_is_escaped() -> None:
    report = {"model": {"label": "m<b>", "ref": "x", "width": 1, "resolution": 8,
                        "num_classes": 2, "weights": None, "params": 1, "macs": 1, "inputs": {}},
              "machine": {}, "run": {"seconds": 1, "finished": "now"}, "exit_code": 1,
              "nodes": [_node("export_onnx", "fail", error="<script>alert(1)</script>")]}
    report["nodes"][0]["parity"]["reason"] = None
    text = render_html(report)
    assert "<script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "m&lt;b&gt;" in text and 'class="fail"' in text


def test_mixed_precision_and_accuracy_get_their_plots_and_notes() -> None:
    nodes = [_node("export_onnx"), _mixed_node()]
    plots = report_plots(nodes)
    captions = [p["caption"] for p in plots]
    assert len(plots) == 4 and any(c.startswith("Accuracy") for c in captions)
    assert any(c.startswith("tflite:int8: the most sensitive layers") for c in captions)
    sensitivity = plots[-1]["svg"]
    assert "CONV_2D #0 (1x8x8x16)" in sensitivity and "CONV_2D #2 (1x8x8x16)" in sensitivity
    report = {"model": {"label": "m", "ref": "x", "width": 1, "resolution": 8, "num_classes": 2,
                        "weights": None, "params": 1, "macs": 1, "inputs": {}},
              "machine": {"cpu_int8": {"flags": ["avx2"], "int8_dot_product": False}},
              "run": {"seconds": 1, "finished": "now"}, "exit_code": 0, "nodes": nodes}
    text = render_html(report)
    _parse(text)
    assert "1 of 3 layers in float (CONV_2D #0 (1x8x8x16))" in text
    assert "int8 flags:\n  avx2" in text and "no int8 dot product" in text


def test_a_report_without_figures_says_so() -> None:
    node = {**_node("tensorrt:fp16", "unavailable"), "latency": None}
    node["parity"] = {"verdict": "unavailable", "reason": "no GPU", "failures": []}
    assert report_plots([node]) == []
    report = {"model": {"label": "m", "ref": "x", "width": 1, "resolution": 8, "num_classes": 2,
                        "weights": None, "params": 1, "macs": 1, "inputs": {}},
              "machine": {}, "run": {"seconds": 1, "finished": "now"}, "exit_code": 3,
              "nodes": [node]}
    text = render_html(report)
    assert "No node has latency, parity or accuracy figures to plot." in text
    assert 'class="other">unavailable' in text and "no GPU" in text


def test_writer_and_report_command_write_the_page(tiny_run, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run.out_dir, run_dir)
    assert (run_dir / "report.html").is_file()              # written by the run itself
    (run_dir / "report.html").unlink()
    result = CliRunner().invoke(app, ["report", str(run_dir)])
    assert result.exit_code == 0
    data = json.loads((run_dir / "report.json").read_text())
    assert (run_dir / "report.html").read_text() == render_html(data)

    def broken(report):
        raise ValueError("no fonts")

    monkeypatch.setattr(writer, "render_html", broken)
    writer.write_report(data, run_dir)
    assert "report.html not written (ValueError: no fonts)" in capsys.readouterr().err
    assert not (run_dir / "report.html").exists()           # no page from an older render
    assert (run_dir / "report.md").is_file() and (run_dir / "report.json").is_file()


def test_a_training_node_gets_its_loss_and_accuracy_curves() -> None:
    history = [{"epoch": 0, "loss": 2.3, "val_accuracy": 0.31},
               {"epoch": 1, "loss": 0.9, "val_accuracy": 0.874}]
    node = _node("finetune", info={"history": history})
    plots = report_plots([node])
    curves = [p for p in plots if p["caption"].startswith("finetune: training loss")]
    assert len(curves) == 1
    assert "validation accuracy, %" in curves[0]["svg"] and "training loss" in curves[0]["svg"]
    assert report_plots([_node("finetune", info={"history": []})]) == report_plots([_node("finetune")])
