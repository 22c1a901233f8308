"""End to end on a tiny model: report schema, verdicts, publishing, cache reuse, exit codes."""
from __future__ import annotations

import json
from pathlib import Path

from pipeline.run import execute

NODE_KEYS = {"name", "stage", "target", "precision", "artifact", "parity", "latency", "cached"}
PARITY_KEYS = {"verdict", "reason", "max_abs", "max_rel", "cosine", "top1_agreement", "n_inputs"}
LATENCY_KEYS = {"runtime", "median_ms", "p90_ms", "runs", "threads"}


def test_tiny_run_passes_every_gate(tiny_run) -> None:
    report = tiny_run.report
    assert tiny_run.exit_code == 0
    names = [n["name"] for n in report["nodes"]]
    assert names == ["load", "trace", "fuse", "export_onnx"]
    for node in report["nodes"]:
        assert NODE_KEYS <= set(node)
        assert PARITY_KEYS <= set(node["parity"])
        assert LATENCY_KEYS <= set(node["latency"])
        assert node["parity"]["verdict"] == "pass", node["parity"]
        assert node["parity"]["n_inputs"] == 8 + 2      # 8 packaged photos + 2 random
        assert node["latency"]["runs"] >= 50 and node["latency"]["median_ms"] > 0
        assert node["latency"]["throughput"]["batch"] == 4
        assert not node["cached"]
    assert set(report) >= {"model", "machine", "nodes"}
    assert report["model"]["params"] > 0 and report["model"]["macs"] > 0


def test_report_files_written(tiny_run) -> None:
    # other tests rerun the same config (cached) into the same folder: compare what must agree
    on_disk = json.loads((tiny_run.out_dir / "report.json").read_text())
    digests = [(n["name"], n["artifact"]["sha256"]) for n in on_disk["nodes"]]
    assert digests == [(n["name"], n["artifact"]["sha256"]) for n in tiny_run.report["nodes"]]
    markdown = (tiny_run.out_dir / "report.md").read_text()
    assert "export_onnx" in markdown and "| pass |" in markdown


def test_onnx_is_published_with_its_digest(tiny_run) -> None:
    from pipeline.artifact import sha256_file

    node = tiny_run.report["nodes"][-1]
    path = node["artifact"]["path"]
    assert path.endswith("onnx/mobilenet_v2_0.35_64_10cls/model.onnx")
    assert sha256_file(__import__("pathlib").Path(path)) == node["artifact"]["sha256"]


def test_fuse_folds_every_batchnorm(tiny_run) -> None:
    fuse = next(n for n in tiny_run.report["nodes"] if n["name"] == "fuse")
    assert fuse["info"]["after"]["batch_norm"] == 0
    assert fuse["info"]["batchnorm_folded"] == fuse["info"]["before"]["batch_norm"] == 52
    assert fuse["parity"]["max_rel"] <= 1e-5


def test_rerun_is_cached_and_runs_no_stage(tiny_run, monkeypatch) -> None:
    """Nothing is recomputed (checked by refusing any stage execution, not by the clock)."""
    from pipeline.config import PipelineConfig
    from pipeline.graph import Graph

    def refuse(*args, **kwargs):
        raise AssertionError("a stage ran on a fully cached rerun")

    monkeypatch.setattr(Graph, "_execute", staticmethod(refuse))
    again = execute(PipelineConfig.model_validate(tiny_run.report["run"]["config"]))
    assert [n["cached"] for n in again.report["nodes"]] == [True] * 4
    assert again.report["nodes"][-1]["artifact"]["sha256"] == \
        tiny_run.report["nodes"][-1]["artifact"]["sha256"]


def test_a_cached_rerun_keeps_the_unchanged_pages_and_rewrites_report_json(tiny_run,
                                                                          monkeypatch) -> None:
    """Rendering report.md/html (matplotlib) was most of a cached rerun; the same artifacts and
    verdicts give the same pages, so they are kept, and rendered again when one is missing."""
    from pipeline.config import PipelineConfig
    from pipeline.report import writer

    config = PipelineConfig.model_validate(tiny_run.report["run"]["config"])
    execute(config)                       # the pages of a run that agrees with this one
    rendered: list[Path] = []
    real = writer.render_pages
    monkeypatch.setattr(writer, "render_pages", lambda report, out: rendered.append(out) or
                        real(report, out))
    again = execute(config)
    assert not again.pages_rendered and rendered == []
    stored = json.loads((again.out_dir / "report.json").read_text())
    assert all(n["cached"] for n in stored["nodes"]), "report.json describes this run"
    (again.out_dir / "report.html").unlink()
    assert execute(config).pages_rendered and rendered == [again.out_dir]
    assert (again.out_dir / "report.html").is_file()


def test_the_content_digest_ignores_times_and_cached_flags_only(tiny_run) -> None:
    import copy

    from pipeline.report.writer import content_digest

    report = copy.deepcopy(tiny_run.report)
    base = content_digest(report)
    for node in report["nodes"]:
        node.update(seconds=node["seconds"] + 1, cached=True, status="cached",
                    run={"finished": "later", "config_sha256": "0" * 64})
    assert content_digest(report) == base
    report["nodes"][0]["parity"]["verdict"] = "fail"
    assert content_digest(report) != base


def test_forced_stage_reruns_downstream(tiny_run) -> None:
    from pipeline.config import PipelineConfig

    config = {**tiny_run.report["run"]["config"], "force": ["fuse"]}
    again = execute(PipelineConfig.model_validate(config))
    status = {n["name"]: n["status"] for n in again.report["nodes"]}
    assert status == {"load": "cached", "trace": "cached", "fuse": "ran", "export_onnx": "ran"}
