"""The nodes of report.json: one function builds every node's entry (a stage that ran, failed,
was skipped, or a target that is unavailable on this machine), and the run's exit code from
them. Schema: see README, 'Report format', and pipeline.report.schema."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.bench import unverified_latency
from pipeline.errors import EXIT_OK, EXIT_PARITY_FAILED, EXIT_TARGET_UNAVAILABLE
from pipeline.graph import NodeResult
from pipeline.parity import ParityResult, unverified

#: Node keys present only where they apply: accuracy with labels, params/macs on pruned nodes,
#: warnings (e.g. fewer calibration images than requested), compute_units (Core ML on macOS:
#: the parity per compute-unit setting).
OPTIONAL_NODE_KEYS = ("accuracy", "params", "macs", "warnings", "compute_units")
# set after the graph ran: ``localisation`` (a failed node, every verified one with
# ``localise: all``; pipeline.localise.auto)


def node_entry(*, name: str, stage: str, target: str, precision: str, status: str,
               parity: dict[str, Any], latency: dict[str, Any] | None = None,
               artifact: dict[str, Any] | None = None, cached: bool = False,
               seconds: float = 0.0, info: dict[str, Any] | None = None,
               error: str | None = None, **optional: Any) -> dict[str, Any]:
    """One node of report.json; ``optional`` takes the keys of :data:`OPTIONAL_NODE_KEYS`."""
    unknown = set(optional) - set(OPTIONAL_NODE_KEYS)
    if unknown:
        raise TypeError(f"not report node keys: {sorted(unknown)}")
    return {"name": name, "stage": stage, "target": target, "precision": precision,
            "status": status, "cached": cached, "seconds": round(seconds, 3),
            "artifact": artifact, "parity": parity, "latency": latency, "info": info or {},
            "error": error, **optional}


def node_json(result: NodeResult, published: Path | None) -> dict[str, Any]:
    """The entry of a node of the stage graph (from its record, cached or fresh)."""
    stage = result.stage
    artifact = None
    if result.outputs:
        main = next(iter(result.outputs.values()))
        path = published or main.path
        artifact = {"path": str(path), "sha256": main.digest, "bytes": main.bytes}
    parity = result.record.get("parity")
    if result.status == "failed":
        parity = ParityResult("fail", result.error or "stage failed").to_json()
    elif result.status == "skipped":
        parity = unverified(result.error or "skipped").to_json()
    return node_entry(name=stage.name, stage=stage.stage, target=stage.target,
                      precision=stage.precision, status=result.status, cached=result.cached,
                      seconds=result.seconds, artifact=artifact, parity=parity,
                      latency=result.record.get("latency"), info=result.record.get("info", {}),
                      error=result.error,
                      **{key: result.record[key] for key in OPTIONAL_NODE_KEYS
                         if key in result.record})


def unavailable_node(target: str, precision: str, reason: str) -> dict[str, Any]:
    """The entry of a target's precision that cannot be built on this machine."""
    return node_entry(name=f"{target}:{precision}", stage="convert", target=target,
                      precision=precision, status="unavailable",
                      parity=unverified(reason).to_json(),
                      latency=unverified_latency(target, None, reason), error=reason)


def exit_code_for(nodes: list[dict[str, Any]]) -> int:
    """The run's exit code: a failed gate, the latency budget's too (1), before an unavailable
    target (3) before success."""
    verdicts = [n["parity"]["verdict"] for n in nodes]
    verdicts += [n["latency_budget"]["verdict"] for n in nodes if n.get("latency_budget")]
    if "fail" in verdicts:
        return EXIT_PARITY_FAILED
    if any(n["status"] == "unavailable" for n in nodes):
        return EXIT_TARGET_UNAVAILABLE
    return EXIT_OK
