"""One pipeline run: preflight, the stage graph through the cache, publishing, the report."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pipeline.version import __version__
from pipeline.cache import Cache
from pipeline.config import PipelineConfig
from pipeline.context import RunContext
from pipeline.files import check_writable
from pipeline.graph import NodeResult, ProgressHook
from pipeline.latency_budget import budget_verdicts, missed
from pipeline.machine import describe_machine
from pipeline.onnx_input import REFERENCE_LABEL, is_onnx_ref, with_model_facts
from pipeline.plan import build_graph, preflight, requested_targets
from pipeline.publish import publish
from pipeline.report.merge import merge, previous_report, stamp
from pipeline.localise.auto import localise_failures
from pipeline.localise.run_map import write_run_layer_map
from pipeline.report.nodes import exit_code_for, node_json, unavailable_node
from pipeline.report.writer import write_report


@dataclass
class RunOutcome:
    report: dict[str, Any]
    out_dir: Path
    exit_code: int
    pages_rendered: bool = True   # False: report.md/html were unchanged and kept
    #: node name -> the published file or folder, for the nodes that were published
    published: dict[str, Path] = field(default_factory=dict)


def default_out_dir(config: PipelineConfig, label: str) -> Path:
    return config.out if config.out is not None else config.artifacts_dir / "reports" / label


def execute(config: PipelineConfig, progress: ProgressHook | None = None) -> RunOutcome:
    """Run the whole pipeline for ``config`` and write the report."""
    started = time.perf_counter()
    if is_onnx_ref(config.model):   # its size and classes come from the model
        config = with_model_facts(config)
    ctx = RunContext(config)
    targets = requested_targets(ctx)
    out_dir = default_out_dir(config, ctx.label)
    check_writable(config.artifacts_dir, "artifacts folder", "--artifacts-dir")
    check_writable(out_dir, "report folder", "--out")
    preflight(ctx)
    graph, unavailable = build_graph(ctx, targets)
    cache = Cache(config.cache_dir)
    results = graph.run(cache, set(config.force), progress)
    label = ctx.label
    budgets = budget_verdicts(results, config.latency_budget_ms)
    published = publish(graph, results, targets, config.artifacts_dir, label,
                        held_back=missed(budgets))
    nodes = [node_json(r, published.get(r.stage.name)) for r in results]
    for node in nodes:
        if node["name"] in budgets:
            node["latency_budget"] = budgets[node["name"]]
        if ctx.source.is_onnx:
            node["parity"]["reference"] = REFERENCE_LABEL
    for target in targets:
        mine = [n for n, r in zip(nodes, results) if r.stage.name in published
                and r.stage.target == target.name]
        if mine:
            target.write_sidecar(config.artifacts_dir / target.platform / label, mine)
    for name, reason in unavailable.items():
        target = next(t for t in targets if t.name == name)
        nodes += [unavailable_node(name, p, reason) for p in config.precisions
                  if p in target.precisions]
    load = next(r for r in results if r.stage.stage in ("load", "load_onnx"))
    reference = load.outputs.get("reference")
    report = {
        "schema": 1,
        "tool": {"name": "mobile-export", "version": __version__},
        "model": {"ref": config.model, "label": label, "width": config.width,
                  "resolution": config.resolution, "num_classes": config.num_classes,
                  "weights": str(config.weights) if config.weights else None,
                  **load.record.get("model", {}), "label": label},
        "machine": describe_machine(),
        "run": {"finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "seconds": round(time.perf_counter() - started, 3),
                "cache_dir": str(cache.root.resolve()),
                "reference": {"sha256": reference.digest, "path": str(reference.path)}
                if reference else None,
                "config": config.model_dump(mode="json")},
        "nodes": nodes,
    }
    if not ctx.source.is_onnx:      # an ONNX input has no torch model to name layers by
        localise_failures(report, config.threads, config.localise)
    report["exit_code"] = exit_code_for(nodes)
    previous = previous_report(out_dir)
    merged = merge(stamp(report), previous)
    rendered = write_report(merged, out_dir, previous)
    if not ctx.source.is_onnx:
        write_run_layer_map(merged, out_dir)
    return RunOutcome(report, out_dir, report["exit_code"], rendered, dict(published))
