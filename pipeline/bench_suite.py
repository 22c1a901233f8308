"""``make bench``: full-size zoo models on every runtime so far, side by side in one run.

For each thread count (1, the stable figure on these shared machines, and 2) one interleaved
session times every (model, runtime, batch) case in A/B rounds, so drift hits all of them alike.
The ONNX models come from the pipeline itself (cached after the first run), so what is timed is
exactly what ``make onnx`` publishes. Results: ``artifacts/bench/bench.json`` and a table.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.bench import BenchSession, benchmark_interleaved
from pipeline.bench_floor import floor_figure, sgemm_peak
from pipeline.bench_gates import figure
from pipeline.files import atomic_write_bytes
from pipeline.config import PipelineConfig
from pipeline.context import RunContext
from pipeline.machine import describe_machine
from pipeline.run import execute
from pipeline.stages.load import build_reference_model
from targets.base import Runner
from targets.onnx import OrtRunner
from targets.tflite import TfliteTarget
from targets.torch_ref import TorchRunner

MODELS = ("mobilenet_v1", "mobilenet_v2", "mobilenet_v3_large")
#: the Android session's protocol (see android_section)
ANDROID_RUNS, ANDROID_ROUNDS = 1000, 20   # 50 timed calls after each fresh warm-up


def onnx_for(model: str, artifacts_dir: Path) -> tuple[RunContext, Path]:
    """Run (or reuse from the cache) the pipeline for a full-size model; return its ONNX file."""
    config = PipelineConfig(model=model, artifacts_dir=artifacts_dir)
    outcome = execute(config)
    node = next(n for n in outcome.report["nodes"] if n["target"] == "onnx")
    if node["parity"]["verdict"] != "pass":
        raise SystemExit(f"{model}: ONNX parity {node['parity']['verdict']}; not benchmarking it")
    return RunContext(config), Path(node["artifact"]["path"])


def cases_for(models: dict[str, tuple[RunContext, Path]], threads: int,
              batches: tuple[int, ...]) -> dict[str, tuple[Runner, dict[str, np.ndarray]]]:
    cases: dict[str, tuple[Runner, dict[str, np.ndarray]]] = {}
    rng = np.random.default_rng(0)
    for model, (ctx, onnx_path) in models.items():
        runners: list[Runner] = [TorchRunner(build_reference_model(ctx), threads),
                                 OrtRunner(onnx_path, threads)]
        for batch in batches:
            feed = rng.standard_normal(ctx.source.input_shape(batch)).astype(np.float32)
            for runner in runners:
                cases[f"{ctx.source.label}|{runner.runtime}|{batch}"] = (runner, {"input": feed})
    return cases


def memory_specs(cases: dict[str, tuple[Runner, dict[str, np.ndarray]]],
                 configs: dict[str, PipelineConfig]) -> dict[str, tuple[str, dict[str, Any]]]:
    """``label|runtime`` -> how :func:`pipeline.bench_memory.peak_memory` measures that case in
    a child of its own (batch 1): a file runner by its path, torch eager by its model's config."""
    specs: dict[str, tuple[str, dict[str, Any]]] = {}
    for name, (runner, feeds) in cases.items():
        label, runtime, batch = name.split("|")
        shape = [int(d) for d in next(iter(feeds.values())).shape]
        path = getattr(runner, "path", None)
        if batch != "1":
            continue
        if path is not None:   # the runner's package is its target (targets.<name>.runner)
            target = type(runner).__module__.split(".")[1]
            specs[f"{label}|{runtime}"] = ("file", {"path": str(path), "input_shape": shape,
                                                    "target": target})
        elif label in configs:
            specs[f"{label}|{runtime}"] = ("torch",
                                           {"config": configs[label].model_dump(mode="json")})
    return specs


def measure_memory(specs: dict[str, tuple[str, dict[str, Any]]], runs: int, warmup: int
                   ) -> dict[str, dict[str, Any]]:
    """Each case's peak resident memory over load + warm-up + timed runs, one child each, one
    after another (after the timing sessions, so no child shares a core with a timed run)."""
    from pipeline.bench_memory import peak_memory

    records = {}
    for name, (kind, spec) in specs.items():
        records[name] = peak_memory(kind, spec, threads=1, batch=1, warmup=warmup, runs=runs)
        record = records[name]
        print(f"memory {name}: "
              + (f"peak {record['peak_rss_mb']} MiB ({record['inference_rss_mb']} MiB over the "
                 f"runtime's imports)" if record["verdict"] == "measured"
                 else f"unverified: {record['reason']}"))
    return records


def attach_memory(rows: list[dict[str, Any]], records: dict[str, dict[str, Any]]) -> None:
    """``peak_mem_mb`` (the child's peak, MiB) and ``inference_mem_mb`` on each batch-1,
    1-thread row (``peak_rss_mb`` stays the bench process's own high-water mark)."""
    for row in rows:
        record = records.get(f"{row['model']}|{row['runtime']}")
        if record and row["batch"] == 1 and row["threads"] == 1:
            row["peak_mem_mb"] = record["peak_rss_mb"]
            row["inference_mem_mb"] = record["inference_rss_mb"]


def rows_of(session: BenchSession, threads: int) -> list[dict[str, Any]]:
    rows = []
    for name, stats in session.items():
        model, runtime, batch = name.split("|")
        target = "torch" if runtime.startswith("torch") else "onnx"
        rows.append({"model": model, "target": target, "precision": "fp32",
                     "runtime": runtime, "batch": int(batch), "threads": threads,
                     "median_ms": round(stats.median_ms, 3), "p90_ms": round(stats.p90_ms, 3),
                     "min_ms": round(stats.min_ms, 3),
                     "throughput_ips": round(stats.throughput_ips, 1), "runs": stats.runs,
                     "warmup": stats.warmup, "rounds": stats.rounds,
                     "peak_rss_mb": stats.peak_rss_mb,
                     "other_cpu_s": round(session.other_cpu_s, 2),
                     "session_wall_s": round(session.wall_s, 1)})
    return rows


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """ONNX Runtime median / torch eager median for each (model, batch, threads)."""
    index = {(r["model"], r["runtime"], r["batch"], r["threads"]): r["median_ms"] for r in rows}
    out = []
    for (model, runtime, batch, threads), median in sorted(index.items()):
        if runtime == "onnxruntime":
            eager = index.get((model, "torch-eager", batch, threads))
            if eager:
                out.append({"model": model, "batch": batch, "threads": threads,
                            "ort_over_eager": round(median / eager, 3)})
    return out


def print_table(rows: list[dict[str, Any]], summary: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="make bench — medians of interleaved runs")
    for column in ("model", "runtime", "threads", "batch", "median ms", "p90 ms", "img/s",
                   "peak mem MB"):
        table.add_column(column)
    for r in sorted(rows, key=lambda r: (r["threads"], r["model"], r["batch"], r["runtime"])):
        memory = r.get("peak_mem_mb")
        table.add_row(r["model"], r["runtime"], str(r["threads"]), str(r["batch"]),
                      f"{r['median_ms']:.2f}", f"{r['p90_ms']:.2f}", f"{r['throughput_ips']:.0f}",
                      "" if memory is None else f"{memory:.0f}")
    console = Console(width=120)
    console.print(table)
    for s in summary:
        console.print(f"{s['model']} batch {s['batch']} threads {s['threads']}: "
                      f"ONNX Runtime / eager = {s['ort_over_eager']}")


#: The built-in trained model for the int8 and pruning figures, with exactly the Makefile's
#: settings (min_accuracy is part of the finetune stage's cache key), so that `make bench`
#: reuses the model `make all` trained instead of training it again.
TRAINED = {"model": "mobilenet_v2", "width": 1.0, "resolution": 128, "num_classes": 10,
           "dataset": "digits", "finetune_epochs": 6, "min_accuracy": 0.95}


def compression_cases(artifacts_dir: Path, threads: int) -> tuple[dict, dict[str, dict]]:
    """ORT fp32 / int8 / 30 %-pruned (distilled) fp32 of the trained built-in model, plus each
    variant's accuracy on the digits' held-out split (all produced and gated by the pipeline)."""
    base = execute(PipelineConfig.model_validate({**TRAINED, "artifacts_dir": artifacts_dir,
                                                  "precisions": ["fp32", "int8"]}))
    pruned = execute(PipelineConfig.model_validate({**TRAINED, "artifacts_dir": artifacts_dir,
                                                    "prune": 0.3, "distill": True}))
    pick = {"fp32": (base, "export_onnx"), "int8": (base, "onnx:int8"),
            "pruned30-fp32": (pruned, "export_onnx")}
    cases, facts = {}, {}
    feed = {"input": np.random.default_rng(0).standard_normal((1, 3, 128, 128)).astype(np.float32)}
    for variant, (outcome, node_name) in pick.items():
        node = next(n for n in outcome.report["nodes"] if n["name"] == node_name)
        label = f"{base.report['model']['label']}-{variant}"
        cases[f"{label}|onnxruntime|1"] = (OrtRunner(Path(node["artifact"]["path"]), threads), feed)
        prune_node = next((n for n in outcome.report["nodes"] if n["name"] == "prune"), None)
        facts[label] = {"variant": variant, "accuracy": (node.get("accuracy") or {}).get("value"),
                        "verdict": node["parity"]["verdict"],
                        "params": outcome.report["model"].get("params"),
                        "macs": outcome.report["model"].get("macs"),
                        "prune": prune_node and {"params": prune_node.get("params"),
                                                 "macs": prune_node.get("macs"),
                                                 "verdict": prune_node["parity"]["verdict"],
                                                 "accuracy": prune_node.get("accuracy")}}
    return cases, facts


def converted(config: PipelineConfig) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Run (or reuse from the cache) a tflite run; its nodes by name and its report's "model"
    (label, params, MACs). A conversion that failed stops the bench (a parity failure does not:
    the file exists)."""
    outcome = execute(config)
    nodes = {n["name"]: n for n in outcome.report["nodes"]}
    for name, node in nodes.items():
        if node["status"] == "failed" or (name.startswith("tflite:") and not node["artifact"]):
            reason = (node.get("error") or node["parity"].get("reason") or "").splitlines()
            raise SystemExit(f"bench: {name} of {outcome.report['model']['label']} did not "
                             f"convert: {reason[0] if reason else node['status']}")
    return nodes, outcome.report["model"]


def android_section(args: argparse.Namespace, rows: list[dict[str, Any]],
                    specs: dict[str, tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """TFLite fp32/int8 against ONNX Runtime fp32 and the Keras-native references in one
    interleaved session (targets.tflite.bench); appends its rows and memory specs, returns its
    facts and gated ratios."""
    from targets.tflite.bench import android_cases, android_figures

    cases, facts = android_cases(args.artifacts_dir, TRAINED, converted, threads=1)
    specs.update(memory_specs(cases, {}))
    # The gates are within a few % of parity (1.02x against the native fp32, 1.05x int8). With
    # every runner resident, the same two int8 files measured 1.086, 0.989 and 0.99 in three
    # processes (and 1,000 calls in 20 rounds still 0.87-1.02); a fresh instance per round, one
    # resident at a time, gave 0.99-1.005 (fp32 1.00-1.03): pipeline.bench fresh_rounds.
    session = benchmark_interleaved(cases, warmup=args.warmup, runs=max(args.runs, ANDROID_RUNS),
                                    rounds=max(2 * args.rounds, ANDROID_ROUNDS),
                                    fresh_rounds=True)
    new_rows = []
    for row in rows_of(session, threads=1):
        name = f"{row['model']}|{row['runtime']}|{row['batch']}"
        new_rows.append({**row, **facts[name]})
    rows += new_rows
    figures = android_figures(new_rows, describe_machine())
    for group, ratios_of_group in figures.items():
        for name, figure in ratios_of_group.items():
            print(f"android {group}: {name} = {figure['value']} (limit {figure['limit']}): "
                  f"{figure['verdict']}")
    ort = next(r for r in new_rows if (r["group"], r["target"]) == ("full_size", "onnx"))
    floor = floor_figure(ort["macs"], ort["median_ms"], sgemm_peak(threads=1))
    print(f"ONNX Runtime fp32 {ort['model']}: {floor['median_ms']} ms = {floor['over_floor']}x "
          f"the sgemm floor ({floor['floor_ms']} ms: {floor['macs']:,} MACs at "
          f"{floor['sgemm_gflops']} GFLOP/s, one thread)")
    return {"figures": figures, "ort_fp32_vs_sgemm_floor": floor,
            "op_counts": op_count_table(new_rows),
            "other_cores_busy": round(session.other_cores_busy, 3),
            "wall_s": round(session.wall_s, 1)}


def op_count_table(rows: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Operator counts of every TFLite file in the session, by row name, side by side."""
    return {f"{r['model']}|{r['target']}": r["ops"] for r in rows if r.get("ops")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("artifacts/bench/bench.json"))
    parser.add_argument("--artifacts-dir", type=Path, default=Path("artifacts"))
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--compression", action=argparse.BooleanOptionalAction, default=True,
                        help="also time int8 and 30 %% pruning of the trained built-in model")
    parser.add_argument("--android", action=argparse.BooleanOptionalAction,
                        default=TfliteTarget().unavailable_reason() is None,
                        help="also time TFLite on LiteRT against ONNX Runtime (needs the "
                             "TFLite converters)")
    parser.add_argument("--memory", action=argparse.BooleanOptionalAction, default=True,
                        help="also measure each runtime's peak memory in a child process")
    args = parser.parse_args(argv)
    models = {m: onnx_for(m, args.artifacts_dir) for m in args.models.split(",")}
    batches = tuple(int(b) for b in args.batches.split(","))
    rows: list[dict[str, Any]] = []
    sessions = []
    specs: dict[str, tuple[str, dict[str, Any]]] = {}
    configs = {ctx.source.label: ctx.config for ctx, _ in models.values()}
    for threads in (int(t) for t in args.threads.split(",")):
        cases = cases_for(models, threads, batches)
        specs.update(memory_specs(cases, configs))
        session = benchmark_interleaved(cases, warmup=args.warmup,
                                        runs=args.runs, rounds=args.rounds)
        rows += rows_of(session, threads)
        sessions.append({"threads": threads, "wall_s": round(session.wall_s, 1),
                         "own_cpu_s": round(session.own_cpu_s, 1),
                         "other_cpu_s": round(session.other_cpu_s, 2),
                         "other_cores_busy": round(session.other_cores_busy, 3)})
    compression: dict[str, Any] = {}
    if args.compression:
        cases, facts = compression_cases(args.artifacts_dir, threads=1)
        specs.update(memory_specs(cases, {}))
        session = benchmark_interleaved(cases, warmup=args.warmup, runs=max(args.runs, 200),
                                        rounds=args.rounds)
        for row in rows_of(session, threads=1):
            variant = facts[row["model"]]["variant"]
            row["precision"] = "int8" if variant == "int8" else "fp32"
            row.update({k: v for k, v in facts[row["model"]].items() if k != "prune"})
            rows.append(row)
        medians = {facts[r["model"]]["variant"]: r["median_ms"] for r in rows
                   if r["model"] in facts}
        compression = {"facts": facts,
                       "int8_over_fp32": round(medians["int8"] / medians["fp32"], 3),
                       "fp32_over_pruned30": round(medians["fp32"] / medians["pruned30-fp32"], 3)}
        compression["figures"] = {name: figure(name, compression[name], describe_machine())
                                  for name in ("int8_over_fp32", "fp32_over_pruned30")}
        for name, gated in compression["figures"].items():
            print(f"ORT {name} = {gated['value']} (limit {gated['limit']}): {gated['verdict']}")
    android = android_section(args, rows, specs) if args.android else {}
    memory = measure_memory(specs, runs=args.runs, warmup=args.warmup) if args.memory else {}
    attach_memory(rows, memory)
    summary = ratios(rows)
    atomic_write_bytes(args.out, json.dumps(rows, indent=1).encode())
    details = {"machine": describe_machine(), "sessions": sessions, "ratios": summary,
               "compression": compression, "android": android, "memory": memory}
    atomic_write_bytes(args.out.with_name("bench_details.json"),
                       json.dumps(details, indent=1).encode())
    print_table(rows, summary)
    for s in sessions:
        print(f"threads {s['threads']}: session {s['wall_s']} s, other processes used "
              f"{s['other_cpu_s']} CPU-s ({s['other_cores_busy']} cores on average)")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
