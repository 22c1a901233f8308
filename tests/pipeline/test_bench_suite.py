"""`make bench` plumbing on a tiny model: interleaved cases, rows with the contract's keys, ratios."""
from __future__ import annotations

from pipeline.bench import benchmark_interleaved
from pipeline.bench_suite import cases_for, ratios, rows_of
from pipeline.context import RunContext
from pipeline.run import execute

ROW_KEYS = {"model", "target", "precision", "runtime", "batch", "threads", "median_ms", "p90_ms"}


def test_rows_and_ratios_from_a_tiny_session(tiny_run) -> None:
    from pipeline.config import PipelineConfig

    config = PipelineConfig.model_validate(tiny_run.report["run"]["config"])
    onnx_node = next(n for n in execute(config).report["nodes"] if n["target"] == "onnx")
    from pathlib import Path

    models = {"mobilenet_v2": (RunContext(config), Path(onnx_node["artifact"]["path"]))}
    cases = cases_for(models, threads=1, batches=(1, 2))
    assert len(cases) == 4
    session = benchmark_interleaved(cases, warmup=10, runs=50, rounds=5)
    rows = rows_of(session, threads=1)
    assert len(rows) == 4 and all(ROW_KEYS <= set(r) for r in rows)
    assert {r["runtime"] for r in rows} == {"torch-eager", "onnxruntime"}
    summary = ratios(rows)
    assert {(s["batch"], s["threads"]) for s in summary} == {(1, 1), (2, 1)}
    assert all(s["ort_over_eager"] > 0 for s in summary)


def test_every_batch_one_case_gets_its_own_child_memory_figure(tiny_run) -> None:
    from pathlib import Path

    from pipeline.bench_suite import attach_memory, measure_memory, memory_specs
    from pipeline.config import PipelineConfig

    config = PipelineConfig.model_validate(tiny_run.report["run"]["config"])
    onnx_node = next(n for n in execute(config).report["nodes"] if n["target"] == "onnx")
    ctx = RunContext(config)
    cases = cases_for({"m": (ctx, Path(onnx_node["artifact"]["path"]))}, threads=1,
                      batches=(1, 2))
    specs = memory_specs(cases, {ctx.source.label: config})
    assert {kind for kind, _ in specs.values()} == {"file", "torch"}   # batch 2 not measured
    assert next(s for k, s in specs.values() if k == "file")["target"] == "onnx"
    records = measure_memory(specs, runs=50, warmup=10)
    assert all(r["verdict"] == "measured" and r["peak_rss_mb"] >= r["baseline_rss_mb"] > 0
               for r in records.values())
    rows = [{"model": ctx.source.label, "runtime": runtime, "batch": batch, "threads": 1}
            for runtime in ("torch-eager", "onnxruntime") for batch in (1, 2)]
    attach_memory(rows, records)
    assert [("peak_mem_mb" in r) for r in rows] == [True, False, True, False]
