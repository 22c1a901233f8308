"""The shape of report.json, checked whenever the tool reads one back (``verify``, ``report``,
merging a new run into the model's report): a file of the wrong shape is one clear error, never a
traceback from deep inside the renderer. Fields the tool reads are typed; everything else may
follow (the schema is extended over time, never renamed)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.errors import UserInputError

#: a report of a whole model's nodes is a few hundred KB; refuse anything absurd unread
MAX_REPORT_BYTES = 64 << 20

_DIGEST = r"^[0-9a-f]{64}$"


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ArtifactEntry(_Open):
    path: str
    sha256: str = Field(pattern=_DIGEST)
    bytes: int | None = None


class ParityEntry(_Open):
    verdict: str
    reason: str | None = ""
    max_abs: float | None = None
    max_rel: float | None = None
    cosine: float | None = None
    top1_agreement: float | None = None
    failures: list[str] = []
    tolerance: dict[str, Any] | None = None


class LatencyEntry(_Open):
    runtime: str | None = None
    median_ms: float | None = None
    p90_ms: float | None = None


class AccuracyEntry(_Open):
    value: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    delta: float | None = None
    reference: float | None = None


class NodeRun(_Open):
    """The run a node came from (pipeline.report.merge)."""

    finished: str
    config_sha256: str = Field(pattern=_DIGEST)


class RunRecord(NodeRun):
    config: dict[str, Any]
    exit_code: int


class LatencyBudgetEntry(_Open):
    """--latency-budget-ms's verdict on a node (pipeline.latency_budget)."""

    limit_ms: float = Field(gt=0)
    median_ms: float | None = None
    verdict: Literal["pass", "fail", "unverified"]
    reason: str


class LayerLimit(_Open):
    max_rel: float | None = None
    min_cosine: float | None = None


class LayerErrorEntry(_Open):
    max_rel: float | None = None
    cosine: float | None = None
    added: float | None = None


class LocalisedLayer(_Open):
    """One layer the renderers name (first divergent, transient, top)."""

    torch_module: str
    onnx_node: str = ""
    onnx_tensor: str = ""
    target_tensor: str = ""
    fused_with: list[str] = []
    error: LayerErrorEntry = LayerErrorEntry()
    limit: LayerLimit | None = None


class CurvePoint(_Open):
    torch_module: str
    onnx_tensor: str
    max_rel: float | None = None
    cosine: float | None = None


class LocalisationEntry(_Open):
    """Where a node first diverges from PyTorch (pipeline.localise; failed nodes, every
    verified one with ``localise: all``), or why that could not be found out."""

    precision: str | None = None
    compared: int | None = None
    limit: LayerLimit | None = None
    first_divergent: LocalisedLayer | None = None
    transient: list[LocalisedLayer] = []
    top: list[LocalisedLayer] = []
    curve: list[CurvePoint] = []
    error: str | None = None


class NodeEntry(_Open):
    name: str
    stage: str
    target: str
    precision: str
    status: str
    cached: bool = False
    artifact: ArtifactEntry | None = None
    parity: ParityEntry
    latency: LatencyEntry | None = None
    accuracy: AccuracyEntry | None = None
    info: dict[str, Any] = {}
    warnings: list[str] = []
    error: str | None = None
    run: NodeRun | None = None
    latency_budget: LatencyBudgetEntry | None = None
    localisation: LocalisationEntry | None = None


class ReferenceEntry(_Open):
    sha256: str = Field(pattern=_DIGEST)
    path: str


class RunEntry(_Open):
    finished: str
    seconds: float
    cache_dir: str
    reference: ReferenceEntry | None = None
    config: dict[str, Any]


class ReportFile(_Open):
    model: dict[str, Any]
    machine: dict[str, Any] = {}
    run: RunEntry
    nodes: list[NodeEntry]
    exit_code: int
    runs: list[RunRecord] = []


def check_report(data: Any, source: str) -> dict[str, Any]:
    """``data`` if it has report.json's shape; :class:`UserInputError` naming the first few
    problems otherwise."""
    try:
        ReportFile.model_validate(data)
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}"
                    for e in exc.errors()[:3]]
        more = f" (+{exc.error_count() - 3} more)" if exc.error_count() > 3 else ""
        raise UserInputError(f"{source} does not have report.json's shape: "
                             f"{'; '.join(problems)}{more}; rerun the pipeline to write it "
                             "again") from None
    return data


def load_report_file(path: Path) -> dict[str, Any]:
    """Read and check the report at ``path`` (size-capped, JSON, the schema above)."""
    size = path.stat().st_size
    if size > MAX_REPORT_BYTES:
        raise UserInputError(f"{path} is {size} bytes, more than a report can be "
                             f"({MAX_REPORT_BYTES} bytes); pass the --out folder of a run")
    try:
        data = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserInputError(f"{path} is not valid JSON ({str(exc)[:120]}); rerun the "
                             "pipeline") from None
    return check_report(data, str(path))
