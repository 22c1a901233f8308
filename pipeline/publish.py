"""Human-readable copies of verified artifacts: ``<artifacts>/<platform>/<model>/<file>``.

Only a node whose own parity passed, and whose upstream nodes all passed, is published: nothing
downstream of a failed gate leaves the cache.

How an artifact is copied is its target's (``Target.publish_artifact``): most are single files
copied atomically; a Core ML package is extracted into the folder Xcode expects.
"""
from __future__ import annotations

from pathlib import Path

from pipeline.files import atomic_copy, sweep_temp
from pipeline.graph import Graph, NodeResult
from targets.base import Target

SUFFIX_BY_KIND = {"onnx": ".onnx", "tflite": ".tflite", "pt2": ".pt2", "mlpackage": ".mlpackage",
                  "layer_map": ".json"}


def _passed(result: NodeResult) -> bool:
    return result.record.get("parity", {}).get("verdict") == "pass"


def upstream_names(graph: Graph, name: str) -> set[str]:
    seen: set[str] = set()
    todo = [name]
    while todo:
        stage = graph.stages[todo.pop()]
        for item in stage.inputs:
            producer = graph.producer[item]
            if producer not in seen:
                seen.add(producer)
                todo.append(producer)
    return seen


def publish(graph: Graph, results: list[NodeResult], targets: list[Target], root: Path,
            label: str, held_back: set[str] = frozenset()) -> dict[str, Path]:
    """Copy each publishable target output; returns node name -> published path.
    ``held_back``: nodes that passed their checks but not a gate of the user's (the latency
    budget): not published themselves, without holding back the nodes downstream."""
    by_name = {r.stage.name: r for r in results}
    by_target = {t.name: t for t in targets}
    published: dict[str, Path] = {}
    for target in targets:   # what a killed earlier run left half-written there
        sweep_temp(root / target.platform / label)
    for result in results:
        target = by_target.get(result.stage.target)
        if target is None or not result.outputs or not _passed(result) \
                or result.stage.name in held_back:
            continue
        if not all(_passed(by_name[u]) for u in upstream_names(graph, result.stage.name)):
            continue
        for index, (output_name, artifact) in enumerate(result.outputs.items()):
            if output_name in getattr(result.stage, "unpublished", ()):
                continue
            suffix = SUFFIX_BY_KIND.get(artifact.kind, f".{artifact.kind}")
            if index:    # a stage's further outputs (the layer map) keep their own names
                atomic_copy(artifact.path, root / target.platform / label /
                            f"{output_name}{suffix}")
                continue
            dst = root / target.platform / label / target.publish_name(
                output_name, result.stage.precision, suffix)
            target.publish_artifact(artifact.path, dst)
            published[result.stage.name] = dst
    return published
