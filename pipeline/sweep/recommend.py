"""Recommendations of a sweep, per node key: the fastest, the smallest, the most accurate, and the
most accurate that meets a latency budget and/or a frame rate.

Judged on measured figures only (median latency on the node's own runtime; fps = 1000 / median),
among the nodes that take part in Pareto fronts (:func:`pipeline.sweep.pareto.eligible`). Each pick
names its job and figures and the machine they were measured on; a criterion nothing meets is
``job: None`` with a reason. Ties break on latency, then size, then the job's name, so the same
rows always give the same picks.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from pipeline.sweep.pareto import accuracy_of, competitors, median_of, node_keys, size_of

Candidate = tuple[dict[str, Any], dict[str, Any]]


def machine_label(machine: dict[str, Any] | None) -> str:
    """One line naming a machine: cpu model, cores, memory, platform."""
    if not machine:
        return "unknown machine"
    cores = machine.get("usable_cores") or machine.get("logical_cores")
    parts = [str(machine.get("cpu_model") or machine.get("cpu") or "unknown cpu"),
             f"{cores} cores" if cores else None,
             f"{machine['memory_gib']} GiB" if machine.get("memory_gib") else None,
             machine.get("platform")]
    return ", ".join(str(part) for part in parts if part)


def _canonical(machine: dict[str, Any] | None) -> str:
    return json.dumps(machine or {}, sort_keys=True, default=str)


def fps_of(node: dict[str, Any]) -> float | None:
    """Frames per second from the median latency (1000 / median ms), or None: the figure a
    frame-rate target is judged on, so it is also the one shown (not the node's own ``fps``,
    a throughput that may be a mean)."""
    median = median_of(node)
    return None if not median else 1000.0 / median


def effective_limit_ms(latency_budget_ms: float | None, target_fps: float | None) -> float | None:
    """The tightest of the budget and 1000 / target fps, or None when neither is given."""
    limits = [limit for limit in (latency_budget_ms,
                                  None if not target_fps else 1000.0 / target_fps)
              if limit is not None]
    return min(limits) if limits else None


def figures(row: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """What a pick shows of its node: accuracy, latency, fps, size, peak memory, machine."""
    latency = node.get("latency_ms") or {}
    return {"accuracy": node.get("accuracy"), "median_ms": latency.get("median"),
            "p90_ms": latency.get("p90"), "fps": fps_of(node),
            "size_bytes": node.get("size_bytes"), "peak_memory_mb": node.get("peak_memory_mb"),
            "machine": machine_label(row.get("machine"))}


def _pick(criterion: str, candidates: list[Candidate], has: Callable[[dict], bool],
          order: Callable[[Candidate], tuple], none_reason: str) -> dict[str, Any]:
    usable = [c for c in candidates if has(c[1])]
    if not usable:
        return {"criterion": criterion, "job": None, "figures": None, "reason": none_reason}
    row, node = min(usable, key=order)
    return {"criterion": criterion, "job": row["job"], "figures": figures(row, node),
            "reason": None}


def _big(value: float | None) -> float:
    return float("inf") if value is None else value


def _latency_order(c: Candidate) -> tuple:
    return (_big(median_of(c[1])), _big((c[1].get("latency_ms") or {}).get("p90")),
            _big(size_of(c[1])), c[0]["job"])


def _accuracy_order(c: Candidate) -> tuple:
    return (-(accuracy_of(c[1]) or 0.0), _big(median_of(c[1])), _big(size_of(c[1])), c[0]["job"])


def _budget_label(latency_budget_ms: float | None, target_fps: float | None) -> str:
    parts = ([f"median ≤ {latency_budget_ms:g} ms"] if latency_budget_ms is not None else []) + \
            ([f"≥ {target_fps:g} FPS"] if target_fps else [])
    return " and ".join(parts)


def _within(candidates: list[Candidate], limit: float, label: str) -> dict[str, Any]:
    timed = [c for c in candidates if median_of(c[1]) is not None]
    meeting = [c for c in timed if median_of(c[1]) <= limit]   # type: ignore[operator]
    criterion = f"most accurate within {label}"
    if not meeting:
        fastest = min(timed, key=_latency_order, default=None)
        reason = (f"no passing node meets {label}" +
                  (f"; the fastest, {fastest[0]['job']}, takes {median_of(fastest[1]):.3g} ms"
                   if fastest else "; none has a measured latency"))
        return {"criterion": criterion, "job": None, "figures": None, "reason": reason,
                "limit_ms": limit}
    pick = _pick(criterion, meeting, lambda n: accuracy_of(n) is not None, _accuracy_order,
                 f"accuracy was not measured (no labelled dataset); {len(meeting)} passing "
                 f"node(s) meet {label}: see the fastest and the smallest")
    return {**pick, "limit_ms": limit}


def recommend_key(rows: Sequence[dict[str, Any]], key: str, *,
                  latency_budget_ms: float | None = None,
                  target_fps: float | None = None) -> dict[str, Any]:
    """The recommendations of one node key: ``{"key", "machine", "note", "picks": [...]}``."""
    candidates = list(competitors(rows, key))
    machines = {_canonical(row.get("machine")): row.get("machine") for row, _ in candidates}
    note = None
    if len(machines) > 1:
        labels = sorted({machine_label(m) for m in machines.values()})
        note = (f"these figures were measured on {len(machines)} different machines "
                f"({'; '.join(labels) if len(labels) > 1 else labels[0] + ', different software'}"
                "): latencies are not comparable across them; each pick names its own")
    none = "no node of this key passed its checks" if not candidates else None
    picks = [
        _pick("fastest", candidates, lambda n: median_of(n) is not None, _latency_order,
              none or "no passing node has a measured latency"),
        _pick("smallest", candidates, lambda n: size_of(n) is not None,
              lambda c: (size_of(c[1]), _big(median_of(c[1])), c[0]["job"]),
              none or "no passing node has an artifact size"),
        _pick("most accurate", candidates, lambda n: accuracy_of(n) is not None, _accuracy_order,
              none or "accuracy was not measured (no labelled dataset)"),
    ]
    limit = effective_limit_ms(latency_budget_ms, target_fps)
    if limit is not None:
        within = _within(candidates, limit, _budget_label(latency_budget_ms, target_fps))
        if none:
            within.update(reason=none, job=None, figures=None)
        picks.append(within)
    machine = next(iter(machines.values())) if len(machines) == 1 else None
    return {"key": key, "machine": machine_label(machine) if machines else None,
            "note": note, "picks": picks}


def recommend(rows: Sequence[dict[str, Any]], *, latency_budget_ms: float | None = None,
              target_fps: float | None = None) -> dict[str, dict[str, Any]]:
    """:func:`recommend_key` for every node key in ``rows``, by key."""
    return {key: recommend_key(rows, key, latency_budget_ms=latency_budget_ms,
                               target_fps=target_fps) for key in node_keys(rows)}
